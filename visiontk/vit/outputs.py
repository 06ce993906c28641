"""Writing an attention result: pictures, masks and the JSON summary, as one set.

Every file of an image is made in memory, written to a temporary beside its name, and renamed
into place only when all of them are written, so an interrupted run leaves an image's earlier
set or its new one, not a mix. Files that an earlier run listed in the image's JSON and this
run does not write (object masks beyond the new count, features no longer asked for) are
removed; nothing else in the folder is touched, and no output may replace an input.
"""

from __future__ import annotations

import io
import json
import re
import stat
from collections.abc import Collection
from pathlib import Path

import numpy as np

from .._files import write_set
from ..errors import ImageError
from ..viz import encode_image
from .attention import AttentionResult
from .pictures import heads_grid, mask_image, objects_picture, overlay, pca_picture

#: Largest earlier JSON read for the files it lists (a summary is a few kB).
MAX_SUMMARY_BYTES = 1 << 20


def write_attention(
    result: AttentionResult,
    folder: Path,
    stem: str,
    method: str,
    protect: Collection[Path] = (),
) -> dict:
    """``stem``_heads.png (per-head heat maps), ``stem``_overlay.png (chosen mask on the image),
    ``stem``_mask.png (0/255) and ``stem``.json, and with features ``stem``_features.npy
    (h × w × D float32) and ``stem``_pca.png (the image beside its features' first three
    principal components); with ``method`` "maskcut", the overlay shows each object in its
    own colour, ``stem``_mask.png holds them all and ``stem``_object<k>.png each one (0/255).
    ``protect``: paths (the inputs) that no output may replace: an ImageError instead.
    Returns the summary written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mask = result.mask(method)
    summary = result.summary(method)
    shown = objects_picture(result) if method == "maskcut" else overlay(result, mask)
    files = {
        f"{stem}_heads.png": encode_image(heads_grid(result), ".png"),
        f"{stem}_overlay.png": encode_image(shown, ".png"),
        f"{stem}_mask.png": encode_image(_grey(result, mask), ".png"),
    }
    # the summary lists the objects only for maskcut: none written otherwise
    objects = zip(summary.get("objects", []), result.objects or [], strict=False)
    for i, (entry, one) in enumerate(objects, start=1):
        entry["mask"] = f"{stem}_object{i}.png"
        files[entry["mask"]] = encode_image(_grey(result, one), ".png")
    if result.features is not None:  # patch features for the user's own use, and their PCA
        buffer = io.BytesIO()
        np.save(buffer, result.features)
        files[f"{stem}_features.npy"] = buffer.getvalue()
        picture = np.hstack([result.image, pca_picture(result)])
        files[f"{stem}_pca.png"] = encode_image(picture, ".png")
        summary["features"] = {"file": f"{stem}_features.npy", "shape": list(result.features.shape)}
    files[f"{stem}.json"] = json.dumps(summary, indent=2).encode()
    inputs = {_real(p) for p in protect}
    for name in files:
        if _real(folder / name) in inputs:
            raise ImageError(
                f"{folder / name}: an output of {stem} would replace this input image; "
                f"write the outputs to another folder"
            )
    stale = {
        name
        for name in _listed_before(folder, stem) - set(files)
        if _real(folder / name) not in inputs
    }
    write_set(folder, files)  # the JSON last: its dict entry was made last
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    return summary


def _grey(result: AttentionResult, mask) -> np.ndarray:
    """A patch mask as a 0/255 RGB picture at image resolution."""
    return mask_image(result, mask)[:, :, None].repeat(3, axis=2)


def _real(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(path).absolute()


def written_before(folder: Path, stem: str) -> set[str]:
    """The files of the image's set from an earlier run in ``folder``, as its JSON says (none
    without a JSON): so that a folder that is its own output does not feed them back."""
    listed = _listed_before(folder, stem)
    if not (folder / f"{stem}.json").is_file():
        return listed
    return listed | {f"{stem}_{part}.png" for part in ("heads", "overlay", "mask")}


def _listed_before(folder: Path, stem: str) -> set[str]:
    """The optional files (object masks, features, PCA picture) that the image's JSON from an
    earlier run says that run wrote: only names of the shapes this module writes."""
    path = folder / f"{stem}.json"
    try:  # only a regular file of a JSON's size: never a FIFO, a device or a link to one
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SUMMARY_BYTES:
            return set()
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    if not isinstance(earlier, dict):
        return set()
    names: set[str] = set()
    for entry in earlier.get("objects") or []:
        if isinstance(entry, dict) and isinstance(entry.get("mask"), str):
            names.add(entry["mask"])
    if isinstance(earlier.get("features"), dict):
        names |= {f"{stem}_features.npy", f"{stem}_pca.png"}
    ours = re.compile(re.escape(stem) + r"(_object[1-9]\d*\.png|_features\.npy|_pca\.png)")
    return {n for n in names if ours.fullmatch(n)}
