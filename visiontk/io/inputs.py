"""What a run takes as its inputs: a folder, a glob pattern, a list file or a list of paths,
turned into (name, path) pairs whose names are unique text, never the run's own outputs."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ..errors import ImageError, OptionError, as_text
from . import IMAGE_SUFFIXES

#: Folders of a run's output folder that hold its pictures and caches, whatever its stages.
OUTPUT_FOLDERS = ("report", ".cache")


def resolve_images(
    images, accepts=IMAGE_SUFFIXES, outputs=None, folders=(), unreadable: list | None = None
) -> list[tuple[str, Path]]:
    """(name, path) for every input, sorted by name; names are paths relative to the folder
    (or to the common parent of a glob or list), unique within a run. A folder yields the files
    whose suffix is in ``accepts`` (image files by default).

    Outputs are never inputs (a report's thumbnails would become images of the next run):
    what a folder or a pattern finds inside ``outputs`` (the run's output folder) is left out,
    and when ``outputs`` is the searched folder itself (or above it), what lies in its
    :data:`OUTPUT_FOLDERS` and the stages' ``folders``, and so is any other run's output
    folder found in it. A link whose file is gone is an input (that fails as a missing file
    does); subfolders that cannot be read go into ``unreadable`` as (folder, reason)."""
    if isinstance(images, (list, tuple)):
        paths = [Path(p) for p in images]
        base = None
    else:
        text = str(images)
        if not text.strip():  # Path("") is the current folder
            raise ImageError("no images given (an empty name)")
        p = Path(text)
        if p.is_dir():
            paths = _files_under(p, accepts, unreadable if unreadable is not None else [])
            base = p
        elif any(ch in text for ch in "*?["):
            paths = [Path(q) for q in sorted(glob.glob(text, recursive=True))]
            base = None
        elif p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
            # names that are not UTF-8 come back as the same bytes (surrogateescape)
            lines = [
                ln.strip()
                for ln in p.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            ]
            paths = [(p.parent / ln) for ln in lines if ln and not ln.startswith("#")]
            base = None
        elif p.is_file():
            paths, base = [p], None
        else:
            raise ImageError(f"{text}: no such folder, image list or pattern")
    if outputs is not None and not isinstance(images, (list, tuple)):
        paths = _without_outputs(paths, Path(outputs), folders)
    if not paths:
        raise ImageError(
            f"{images}: nothing to process (a folder is searched for "
            f"{', '.join(sorted(accepts))} files)"
        )
    # names from the paths as given, links not resolved: an alias keeps its own name
    absolute = [os.path.abspath(q) for q in paths]
    top = (
        os.path.abspath(base)
        if base is not None
        else os.path.commonpath([os.path.dirname(a) for a in absolute])
    )
    named = sorted(
        (
            as_text(
                os.path.relpath(a, top) if a.startswith(top.rstrip(os.sep) + os.sep) else q.name
            ),
            q,
        )
        for a, q in zip(absolute, paths, strict=True)
    )
    seen = set()
    for name, _ in named:
        if name in seen:
            raise OptionError(f"two inputs are both named {name!r} in this run")
        seen.add(name)
    return named


def _files_under(folder: Path, accepts, unreadable: list) -> list[Path]:
    """The files of ``folder`` and its subfolders whose suffix is in ``accepts``, following
    links to folders (each real folder once: a link to a parent cannot loop), never into a
    run's output folder (one holding ``.lock`` and ``.cache``: its pictures are no inputs);
    links whose file is gone are kept (the run lists them as missing)."""
    found, seen = [], set()

    def cannot_read(exc: OSError) -> None:
        unreadable.append((exc.filename, exc.strerror or type(exc).__name__))

    for here, subfolders, files in os.walk(folder, onerror=cannot_read, followlinks=True):
        st = os.stat(here)
        if (st.st_dev, st.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        subfolders[:] = sorted(
            d
            for d in subfolders
            if d != ".cache"
            and not (
                os.path.isfile(os.path.join(here, d, ".lock"))
                and os.path.isdir(os.path.join(here, d, ".cache"))
            )
        )
        for name in files:
            q = Path(here) / name
            if q.suffix.lower() in accepts and (q.is_file() or q.is_symlink()):
                found.append(q)
    return sorted(found)


def _without_outputs(paths: list[Path], out: Path, folders) -> list[Path]:
    inputs = [q for q in paths if not _inside(q, out)]
    if not inputs:  # OUT holds the inputs: leave out only what a run writes there
        written = [out / f for f in (*OUTPUT_FOLDERS, *folders)]
        inputs = [q for q in paths if not any(_inside(q, w) for w in written)]
    return inputs


def _inside(path: Path, base: Path) -> bool:
    try:
        path.resolve().relative_to(base.resolve())
        return True
    except ValueError:
        return False


__all__ = ["OUTPUT_FOLDERS", "resolve_images"]
