"""Writing a benchmark's table into the docs page that shows it, so the page shows what the
script measured.

Each table sits in one page of docs/ between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
(``PAGES`` says which page); a benchmark run with ``--docs`` replaces what is between its markers
(and nothing else), with the date and the command above it:

    python bench/pipeline_bench.py --docs

``--readme`` is the flag's former name (the tables were in README.md) and still works.
``--simd avx2`` (bench/cpu_levels.py) runs the bench held to AVX2 and publishes into
``NAME_avx2``'s markers; every table says which CPU and SIMD level it came from.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by path (tests)
import cpu_levels

DOCS = Path(__file__).resolve().parent.parent / "docs"
BENCHMARKS, GPU = DOCS / "benchmarks.md", DOCS / "gpu.md"
#: table name -> the page that holds its markers
PAGES = {
    "sift_summary": BENCHMARKS,
    "sift_large": BENCHMARKS,
    "sift_bench": BENCHMARKS,
    "sift_speed": BENCHMARKS,
    "match_bench": BENCHMARKS,
    "pipeline_bench": BENCHMARKS,
    "sfm_bench": BENCHMARKS,
    "sfm_global": BENCHMARKS,
    "sfm_scale": BENCHMARKS,
    "vit_bench": BENCHMARKS,
    "dinov3_bench": BENCHMARKS,
    "emulated_gpu_parity": GPU,
}


def add_docs_flag(parser: argparse.ArgumentParser, *names: str) -> None:
    """``--docs`` (alias ``--readme``): publish the tables ``names`` into their pages."""
    pages = sorted({f"docs/{PAGES[name].name}" for name in names})
    parser.add_argument(
        "--docs",
        "--readme",
        dest="docs",
        action="store_true",
        help=f"write the table into {' and '.join(pages)} (--readme: former name)",
    )
    cpu_levels.add_simd_flag(parser)


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The bench's arguments; with ``--simd avx2`` the bench restarts held to AVX2 first."""
    args = parser.parse_args()
    cpu_levels.apply(args)
    print(f"where: {cpu_levels.where()}", flush=True)
    return args


def publish(name: str, text: str, page: Path | None = None, command: str | None = None) -> None:
    """Put ``text`` between the markers for ``name`` in ``page`` (default: ``PAGES[name]``),
    with the date, the command and where it ran (at ``--simd avx2``: into ``NAME_avx2``)."""
    if page is None:
        if name not in PAGES:
            raise SystemExit(f"bench table {name!r} has no page: add it to PAGES in {__file__}")
        page = PAGES[name]
    if cpu_levels.suffix():
        name += cpu_levels.suffix()
        command = f"{command or 'python bench/' + name} --simd avx2"
    content = page.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if len(pattern.findall(content)) != 1:
        raise SystemExit(f"{page}: expected one {start} ... {end} section")
    stamp = (
        f"_{datetime.date.today().isoformat()}: `{command or 'python bench/' + name}`; "
        f"{cpu_levels.where()}_\n\n"
    )
    body = f"{start}\n{stamp}{text.strip()}\n{end}"
    page.write_text(pattern.sub(lambda _: body, content), encoding="utf-8")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
