"""Names every docstring example may use without importing them (pytest --doctest-modules)."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace["np"] = np


# scripts that make the fixtures (they need torch) and benchmarks are not test modules
collect_ignore = ["tests/fixtures", "bench", "examples"]
