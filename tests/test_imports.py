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
