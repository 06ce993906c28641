"""Writing a benchmark's table into the README, so the README shows what the script measured.

Each table in README.md sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a
benchmark run with ``--readme`` replaces what is between its markers (and nothing else):

    python bench/pipeline_bench.py --readme
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def publish(name: str, text: str, readme: Path = README, command: str | None = None) -> None:
    """Put ``text`` between the README's markers for ``name``, with the date and command."""
    content = readme.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if len(pattern.findall(content)) != 1:
        raise SystemExit(f"{readme}: expected one {start} ... {end} section")
    stamp = f"_{datetime.date.today().isoformat()}: `{command or 'python bench/' + name}`_\n\n"
    body = f"{start}\n{stamp}{text.strip()}\n{end}"
    readme.write_text(pattern.sub(lambda _: body, content), encoding="utf-8")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
