"""What a fresh process loads: `import visiontk` without the DINO code, a pipeline worker
without the runner and the entry-point registry (each worker pays its imports at start), and
every public name still there."""

import subprocess
import sys

import pytest


def _loaded(code: str) -> set:
    p = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(p.stdout.split())


def test_import_visiontk_leaves_the_dino_code_until_it_is_used():
    assert "visiontk.vit.attention" not in _loaded("import visiontk")
    assert "visiontk.vit.attention" in _loaded("import visiontk; visiontk.dino_attention")


def test_a_worker_does_not_import_the_runner_or_the_registry():
    loaded = _loaded("import visiontk.pipeline.workers, visiontk.pipeline.executors")
    assert (
        not {"visiontk.pipeline.runner", "visiontk.pipeline.registry", "importlib.metadata"}
        & loaded
    )


@pytest.mark.parametrize("module", ["visiontk", "visiontk.pipeline"])
def test_every_public_name_resolves(module):
    import importlib

    m = importlib.import_module(module)
    for name in m.__all__:
        assert getattr(m, name) is not None, name
    assert set(m.__all__) <= set(dir(m))
    with pytest.raises(AttributeError):
        m.no_such_name  # noqa: B018


def test_every_package_folder_is_installed():
    """A plain `pip install .` ships only the packages pyproject.toml lists: a new folder left
    out of the list works in the editable install and fails on every user's machine."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "visiontk").rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == {"visiontk_cli"}


def test_only_the_public_door_imports_the_sift_internals():
    """Outside visiontk/_sift, only visiontk/extract.py (the public door) and visiontk/testing
    (test support, as numpy.testing) import from it: stages, the CLI and the workers use what a
    plugin can use."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    allowed = {root / "visiontk" / "extract.py", *(root / "visiontk" / "testing").rglob("*.py")}
    offenders = []
    for path in [*(root / "visiontk").rglob("*.py"), *(root / "cli").rglob("*.py")]:
        if "_sift" in path.relative_to(root).parts or path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any("_sift" in n.split(".") for n in names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
