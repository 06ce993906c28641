"""Every fenced block of README.md runs as written, or the README says why it does not; every
link of README.md and docs/ leads somewhere.

The rules for a block are read from the README itself, from an HTML comment on the line before
it (invisible on the rendered page):

- ``<!-- not run: REASON -->``: skipped, and pytest shows REASON (``-ra``). For commands that
  cannot run here: the set-up section (CI runs it on a fresh clone, ``.ci/run``), installs from
  the network, a GPU.
- ``<!-- file: NAME -->``: the block is a file a later command uses (a pipeline file); it is
  written to NAME in the working folder before any block runs.
- otherwise a ````python`` block is run as a script by this interpreter (the project's
  virtualenv), and a plain ````` / ````console`` / ````sh`` / ````bash`` block by
  ``bash -e -o pipefail``, with this interpreter's ``bin/`` first on PATH (``visiontk``,
  ``python``). Any other kind of block fails the test, so a new kind needs a rule.

A block passes when it exits 0; one that raises or exits non-zero fails with its output.

The blocks run in one temporary working folder holding what the README's names refer to:
``sample_images/`` (a link to the repository's), ``photos/`` (three sample photos, standing for
the user's), and weights files under the names of the official downloads, made from the test
fixtures: tiny random models, since what is tested here is the README's commands, not the models
(``dino_deitsmall16_pretrain.pth`` from tests/dino_fixture.py with patch 16;
``weights/dinov2_vits14_reg4_pretrain.pth`` from tests/dinov2_fixture.py with 4 registers;
``dinov3_vits16_pretrain_lvd1689m-08c60483.pth``, tests/dinov3_fixture.py's hub-layout model;
``alexnet.pth`` and ``checkpoints/alexnet.pth`` from tests/branch_fixture.py, stored as a
two-group AlexNet stores conv1 and conv2). ``$VISIONTK_WEIGHTS`` is unset and ``$TORCH_HOME`` is
an empty folder, so only the names the README gives can find weights.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_KINDS = {"", "console", "sh", "bash", "shell"}
#: the sample photos copied into photos/: a matching pair and a third view, small enough that
#: the README's runs over photos/ take seconds
PHOTOS = ("coffee.png", "coffee_warped.png", "astronaut.png")
#: seconds one block may take before it counts as failed
BLOCK_TIMEOUT = 180

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
RULE = re.compile(r"<!--\s*(not run|file):\s*(.*?)\s*-->\s*\Z", re.S)


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    kind: str  # the fence's language, "" when none
    text: str
    rule: str | None  # "not run" / "file" / None
    argument: str  # the reason, or the file name

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.kind or 'shell'}"


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        rule = RULE.search(before)
        blocks.append(
            Block(
                line=text.count("\n", 0, m.start()) + 1,
                kind=m.group(1),
                text=m.group(2),
                rule=rule.group(1) if rule else None,
                argument=rule.group(2) if rule else "",
            )
        )
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_readme_blocks_are_found():
    """The parser sees the README's blocks: a check that cannot pass on an empty list."""
    kinds = {b.kind for b in BLOCKS}
    assert len(BLOCKS) >= 10 and "python" in kinds and "" in kinds, BLOCKS
    setup = [b for b in BLOCKS if "pip install" in b.text and "-m venv" in b.text]
    assert len(setup) == 2 and all(b.rule == "not run" for b in setup)


def test_rules_are_read_from_the_line_before_a_block():
    text = (
        "a\n<!-- not run: needs a GPU -->\n```\nvisiontk x\n```\n\n"
        "<!-- file: p.toml -->\n```toml\n[[stages]]\n```\n\n```python\nprint(1)\n```\n"
    )
    skipped, written, run = readme_blocks(text)
    assert (skipped.rule, skipped.argument, skipped.kind, skipped.text) == (
        "not run",
        "needs a GPU",
        "",
        "visiontk x\n",
    )
    assert (written.rule, written.argument, written.kind) == ("file", "p.toml", "toml")
    assert (run.rule, run.kind, run.text, run.line) == (None, "python", "print(1)\n", 12)


def _save_state_dict(path: Path, state: dict) -> Path:
    """A PyTorch zip checkpoint of float32 arrays, written without torch."""
    from hostile import Tensor, write_pth

    records, storages = {}, {}
    for i, (name, values) in enumerate(state.items()):
        array = np.ascontiguousarray(values, dtype=np.float32)
        strides = tuple(s // array.itemsize for s in array.strides)
        records[name] = Tensor(str(i), 0, tuple(array.shape), strides)
        storages[str(i)] = array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_pth(path, records, storages)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    import branch_fixture
    import dino_fixture
    import dinov2_fixture
    import dinov3_fixture

    work = tmp_path_factory.mktemp("readme")
    (work / "sample_images").symlink_to(ROOT / "sample_images")
    (work / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(ROOT / "sample_images" / name, work / "photos" / name)
    _save_state_dict(work / "dino_deitsmall16_pretrain.pth", dino_fixture.tiny_state(16))
    _save_state_dict(
        work / "weights" / "dinov2_vits14_reg4_pretrain.pth", dinov2_fixture.tiny_state("v2reg4")
    )
    _save_state_dict(
        work / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", dinov3_fixture.tiny_state("v3")
    )
    conv1, conv2 = branch_fixture.planted_layers()
    alexnet = {
        "features.0.weight": conv1,
        "features.0.bias": np.zeros(96),
        "features.3.weight": conv2,
        "features.3.bias": np.zeros(64),
    }
    _save_state_dict(work / "alexnet.pth", alexnet)
    _save_state_dict(work / "checkpoints" / "alexnet.pth", alexnet)
    (work / "torch_home").mkdir()
    for block in BLOCKS:
        if block.rule == "file":
            (work / block.argument).write_text(block.text, encoding="utf-8")
    return work


def _environment(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VISIONTK_WEIGHTS", "PYTHONPATH")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TORCH_HOME"] = str(work / "torch_home")
    return env


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, workdir: Path):
    if block.rule == "not run":
        pytest.skip(f"README line {block.line}: not run: {block.argument}")
    if block.rule == "file":
        assert (workdir / block.argument).read_text(encoding="utf-8") == block.text
        return
    if block.kind == "python":
        script = workdir / f"readme_line{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        command = [sys.executable, script.name]
    elif block.kind in SHELL_KINDS:
        command = ["bash", "-e", "-o", "pipefail", "-c", block.text]
    else:
        pytest.fail(
            f"README line {block.line}: a ```{block.kind} block with no rule: mark it "
            "<!-- file: NAME --> or <!-- not run: REASON --> (see this test's docstring)"
        )
    done = subprocess.run(
        command,
        cwd=workdir,
        env=_environment(workdir),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"README line {block.line} exited {done.returncode}:\n{block.text}\n"
        f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
    )


# Links: relative paths that exist, anchors that GitHub makes from a heading of the page.

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans (where brackets are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation and symbols dropped (letters,
    digits, marks, '_', '-' and spaces kept), spaces to hyphens."""
    kept = [c for c in heading.strip().lower() if c in "-_ " or unicodedata.category(c)[0] in "LNM"]
    return "".join(kept).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2... as on GitHub."""
    found, counts = set(), {}
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, re.M):
        base = github_anchor(m.group(1))
        found.add(f"{base}-{counts[base]}" if base in counts else base)
        counts[base] = counts.get(base, 0) + 1
    return found


def test_github_anchor():
    assert github_anchor("From photos to a 3-D model: `visiontk run sfm`") == (
        "from-photos-to-a-3-d-model-visiontk-run-sfm"
    )
    assert github_anchor("Pairs, and 10k images") == "pairs-and-10k-images"
    assert github_anchor("DINO ViT forward pass") == "dino-vit-forward-pass"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_links_resolve(page: Path):
    links = LINK.findall(_prose(page.read_text(encoding="utf-8")))
    assert links, f"{page}: no links found"
    broken = []
    for target in links:
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here (no network)
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            shown = dest.relative_to(ROOT) if ROOT in dest.parents else dest
            broken.append(f"{target}: no {shown}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)
