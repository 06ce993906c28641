"""The per-image stages (visiontk.stages.image): each takes the options of what it runs."""

from __future__ import annotations

import pytest

import visiontk
from visiontk.errors import OptionError
from visiontk.pipeline import load_stage, option_fields


def test_the_sift_stage_takes_only_what_sift_uses():
    names = {name for name, _, _ in option_fields(load_stage("sift"))}
    assert "max_pixels" not in names and {"max_features", "device"} <= names
    assert "max_pixels" in {name for name, _, _ in option_fields(load_stage("load"))}
    with pytest.raises(OptionError, match="max_pixels"):
        visiontk.sift("sample_images/coffee.png", max_pixels=0)
