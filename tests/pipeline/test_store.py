"""The run's store (visiontk.pipeline.store): what decides whether cached results still hold."""

from __future__ import annotations

from visiontk.pipeline.store import config_hash


def test_config_hash_is_stable_and_sensitive():
    specs = [("load", {"max_side": 0}), ("sift", {"max_features": 100})]
    assert config_hash(specs) == config_hash(
        [("load", {"max_side": 0}), ("sift", {"max_features": 100})]
    )
    assert len(config_hash(specs)) == 16
    assert config_hash(specs) != config_hash(
        [("load", {"max_side": 0}), ("sift", {"max_features": 101})]
    )
    assert config_hash(specs) != config_hash(specs[::-1])
