"""Where numba's compiled kernels are cached: never a folder someone else can write into
(numba unpickles its index files, so whoever can write them runs code as the user)."""

import os
import tempfile

import pytest

from visiontk._numba_cache import cache_dir, trusted_folder


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A temporary folder like /tmp (sticky, writable by all) and a cache home."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return tmp, home


def test_the_users_cache_folder_is_used(machine):
    _, home = machine
    assert cache_dir() == home / "visiontk" / "numba"


@pytest.mark.parametrize("owner", ["this user", "another user"])
def test_a_temporary_folder_planted_by_someone_else_is_never_used(
    machine, tmp_path, monkeypatch, owner
):
    """~/.cache cannot be written, and another local user made visiontk-numba-<uid> first."""
    tmp, _ = machine
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    (tmp_path / "not-a-folder").write_text("")
    planted = tmp / f"visiontk-numba-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    if owner == "another user":
        if os.geteuid() != 0:
            pytest.skip("giving a folder to another user needs root (CI runs as root)")
        os.chown(planted, 65534, 65534)
        planted.chmod(0o755)
    chosen = cache_dir()
    assert chosen != planted and chosen.parent == tmp
    st = chosen.stat()
    assert st.st_uid == os.getuid() and st.st_mode & 0o077 == 0 and trusted_folder(chosen)


def test_a_cache_home_others_can_write_is_not_trusted(machine):
    tmp, home = machine
    home.chmod(0o777)  # e.g. a shared folder: anyone could plant index files in it
    chosen = cache_dir()
    assert not str(chosen).startswith(str(home)) and chosen.parent == tmp
    assert not trusted_folder(home) and trusted_folder(chosen)
