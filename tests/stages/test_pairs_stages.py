"""The pair selection stages' own code (visiontk.stages.pairs); whole runs with them are in
tests/pipeline/test_pipeline.py and tests/pipeline/test_faults.py."""

from __future__ import annotations

import pytest

from visiontk.errors import OptionError
from visiontk.stages.pairs import read_pairs_file


def test_read_pairs_file(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(
        "# hloc's format\na.png b.png\n\nb.png a.png  # the same pair again\n"
        "c.png c.png\nb.png c.png\n"
    )
    assert read_pairs_file(path) == [("a.png", "b.png"), ("b.png", "c.png")]
    assert read_pairs_file(path, ["a.png", "b.png", "c.png"]) == [
        ("a.png", "b.png"),
        ("b.png", "c.png"),
    ]
    with pytest.raises(OptionError, match=r"pairs.txt:2: 'a.png' is not one of"):
        read_pairs_file(path, ["b.png", "c.png"])
    path.write_text("a.png\n")
    with pytest.raises(OptionError, match=r"pairs\.txt:1: expected two image names"):
        read_pairs_file(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(OptionError, match="not UTF-8"):
        read_pairs_file(path)
