"""The README's benchmark tables are written by the benchmarks (--readme), between markers."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_module():
    spec = importlib.util.spec_from_file_location("bench_readme", ROOT / "bench" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_published_table_has_its_markers_once():
    names = set()
    for script in (ROOT / "bench").glob("*.py"):
        names.update(re.findall(r'publish\("(\w+)"', script.read_text()))
    assert {"sift_bench", "sift_speed", "match_bench", "pipeline_bench", "vit_bench",
            "emulated_gpu_parity"} <= names
    readme = (ROOT / "README.md").read_text()
    for name in names:
        assert readme.count(f"<!-- bench:{name} -->") == 1, name
        assert readme.count(f"<!-- /bench:{name} -->") == 1, name


def test_publish_replaces_only_its_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nmiddle\n"
                      "<!-- bench:b -->\nold b\n<!-- /bench:b -->\nend\n")
    module = _readme_module()
    module.publish("a", module.markdown_table(["x", "y"], [[1, 2]]), readme, command="cmd")
    text = readme.read_text()
    assert "old a" not in text and "| 1 | 2 |" in text and "`cmd`" in text
    assert "old b" in text and text.startswith("intro\n") and text.endswith("end\n")
    with pytest.raises(SystemExit, match="bench:c"):
        module.publish("c", "x", readme)
