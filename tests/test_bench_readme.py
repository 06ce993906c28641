"""The benchmark tables in docs/ are written by the benchmarks (--docs), between markers."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _doc_tables_module():
    spec = importlib.util.spec_from_file_location(
        "bench_doc_tables", ROOT / "bench" / "doc_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _published_names() -> set[str]:
    names = set()
    for script in (ROOT / "bench").glob("*.py"):
        names.update(re.findall(r'publish\(\s*"(\w+)"', script.read_text(encoding="utf-8")))
    return names


def test_every_published_table_has_its_markers_once_in_its_page():
    module = _doc_tables_module()
    names = _published_names()
    assert {
        "sift_bench",
        "sift_summary",
        "sift_large",
        "sift_speed",
        "match_bench",
        "pipeline_bench",
        "sfm_bench",
        "vit_bench",
        "emulated_gpu_parity",
    } <= names
    assert names <= set(module.PAGES), names - set(module.PAGES)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    texts = {page: page.read_text(encoding="utf-8") for page in pages}
    for name in names:
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        assert texts[module.PAGES[name]].count(start) == 1, (name, module.PAGES[name])
        assert texts[module.PAGES[name]].count(end) == 1, (name, module.PAGES[name])
        elsewhere = [
            page.name
            for page, text in texts.items()
            if page != module.PAGES[name] and start in text
        ]
        assert not elsewhere, (name, elsewhere)


def test_tables_held_to_avx2_go_beside_their_native_ones(tmp_path, monkeypatch):
    """``--simd avx2`` publishes into NAME_avx2's markers, in the page of NAME, and the stamp
    says the bench was held to AVX2 and names the CPU."""
    module = _doc_tables_module()
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for name in ("sift_speed", "match_bench", "sfm_bench"):
        assert benchmarks.count(f"<!-- bench:{name}_avx2 -->") == 1, name
    page = tmp_path / "benchmarks.md"
    page.write_text("<!-- bench:match_bench_avx2 -->\nold\n<!-- /bench:match_bench_avx2 -->\n")
    monkeypatch.setattr(module, "PAGES", {"match_bench": page})
    monkeypatch.setenv("VISIONTK_BENCH_SIMD", "held")
    monkeypatch.setenv("VISIONTK_SIMD", "avx2")
    module.publish("match_bench", "| new |", command="python bench/match_bench.py --docs")
    text = page.read_text()
    assert "| new |" in text and "old" not in text
    assert "--docs --simd avx2`" in text and "held to AVX2" in text
    from visiontk import simd

    assert simd.cpu_model() in text


def test_publish_replaces_only_its_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "intro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nmiddle\n"
        "<!-- bench:b -->\nold b\n<!-- /bench:b -->\nend\n"
    )
    module = _doc_tables_module()
    module.publish("a", module.markdown_table(["x", "y"], [[1, 2]]), page, command="cmd")
    text = page.read_text()
    assert "old a" not in text and "| 1 | 2 |" in text and "`cmd`" in text
    assert "old b" in text and text.startswith("intro\n") and text.endswith("end\n")
    with pytest.raises(SystemExit, match="bench:c"):
        module.publish("c", "x", page)


def test_publish_goes_to_the_page_named_for_the_table(tmp_path, monkeypatch):
    module = _doc_tables_module()
    page = tmp_path / "gpu.md"
    page.write_text(
        "<!-- bench:emulated_gpu_parity -->\nold\n<!-- /bench:emulated_gpu_parity -->\n"
    )
    monkeypatch.setitem(module.PAGES, "emulated_gpu_parity", page)
    module.publish("emulated_gpu_parity", "new table", command="python bench/x.py --docs")
    assert "new table" in page.read_text() and "old" not in page.read_text()
    with pytest.raises(SystemExit, match="no page"):
        module.publish("not_a_table", "x")


@pytest.mark.parametrize("flag", ["--docs", "--readme"])
def test_docs_flag_and_its_former_name(flag):
    module = _doc_tables_module()
    parser = argparse.ArgumentParser()
    module.add_docs_flag(parser, "vit_bench")
    assert parser.parse_args([flag]).docs and not parser.parse_args([]).docs
    assert "docs/benchmarks.md" in parser.format_help()
