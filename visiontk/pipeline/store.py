"""Where a run keeps its results.

While a run goes, every finished item is one small file in ``OUT/.cache`` written atomically
(features of an image, or matches + geometry of a pair), named by a key made from the image
*content* and the options of the stages that produced it: a rerun finds them and skips the work,
and changing an option changes the key. At the end the run gathers them into two HDF5 files,
each written to a temporary name and renamed, so a killed run never leaves a half-written one.

``features.h5``: one group per image, named by the image's name in the run (relative path,
percent-escaped: "/" is "%2F"), holding ``keypoints`` (N×2 float32, x, y; OpenCV convention),
``descriptors`` (N×128 uint8), ``scores`` (N, float32 response), ``sizes``, ``angles``,
``octaves``; attributes ``image_size`` (height, width) and ``key``. File attributes:
``convention``, ``visiontk_version``.

``matches.h5``: one group per pair, named "<name a>|<name b>" (each escaped as above), holding
``matches`` (M×2 int64 indices into the two keypoint arrays), ``distances`` (M, float32),
``inliers`` (M, bool; all false when no model), and when verified a ``model`` (3×3 float64);
attributes ``image_a``, ``image_b``, ``model_kind``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

import numpy as np

from .._files import atomic_write, own_folder
from ..errors import VisiontkError
from ..features import CONVENTION, Features, Matches
from ..geometry import MODELS, Geometry
from ..tensorfiles import read_npz


def escape(name: str) -> str:
    """``name`` as one file or group name: percent-escaped, the bytes of a file name that are
    not UTF-8 (lone surrogates to Python) included."""
    return quote(name.encode("utf-8", "surrogateescape"), safe="")


def unescape(name: str) -> str:
    return unquote(name)


def pair_group(name_a: str, name_b: str) -> str:
    return f"{escape(name_a)}|{escape(name_b)}"


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (first 20 hex digits): the identity of an image."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


def config_hash(specs: object) -> str:
    """Hash of stage names and options (and visiontk's version): what produced a result."""
    from .. import __version__

    text = json.dumps([__version__, specs], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunFolder:
    """Where each of a run's outputs lives under ``out``: decided here, once."""

    out: Path

    @property
    def cache(self) -> Path:
        return self.out / ".cache"

    @property
    def features(self) -> Path:
        return self.out / "features.h5"

    @property
    def matches(self) -> Path:
        return self.out / "matches.h5"

    @property
    def database(self) -> Path:
        """The COLMAP database: ``--colmap`` writes it, and reconstruct maps it."""
        return self.out / "database.db"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"

    @property
    def failures(self) -> Path:
        return self.out / "failures.json"


@dataclass(frozen=True)
class ItemOutput:
    """Where an image stage may write files of its own for one item: ``folder(section)`` is
    ``OUT/<section>/`` (created), ``stem`` the item's name made safe as one file name
    (escaped as the HDF5 group names are: "a/x.png" → "a%2Fx.png")."""

    root: Path
    name: str

    @property
    def stem(self) -> str:
        return escape(self.name)

    def folder(self, section: str) -> Path:
        return own_folder(Path(self.root) / section, self.root)


class Cache:
    """Per-item result files under ``root`` (``OUT/.cache``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        for kind in ("features", "pairs", "models"):
            own_folder(self.root / kind, self.root.parent)

    def keys(self) -> set[str]:
        """The keys of every result file now in the cache (images' and pairs'): what a run
        finds there from earlier runs."""
        return {
            f.stem
            for kind in ("features", "pairs")
            for f in (self.root / kind).iterdir()
            if f.suffix == ".npz"
        }

    def features_path(self, key: str) -> Path:
        return self.root / "features" / f"{key}.npz"

    def pair_path(self, key: str) -> Path:
        return self.root / "pairs" / f"{key}.npz"

    def save_model(self, key: str, result: dict[str, Any]) -> None:
        """A whole-run stage's result (JSON), once its outputs are in place, with the size and
        SHA-256 of every file they hold (folders: each file in them)."""
        out = self.root.parent
        record = {"result": result, "manifest": _manifest(out, result.get("files", []))}
        with atomic_write(self.root / "models" / f"{key}.json") as tmp:
            tmp.write_text(json.dumps(record, default=str))

    def load_model(self, key: str) -> dict[str, Any] | None:
        """The result saved under ``key`` if the files it names are still there, whole and
        unchanged (a truncated database or a model missing a file is made again)."""
        path = self.root / "models" / f"{key}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("manifest"), dict)
            or not isinstance(record.get("result"), dict)
        ):
            return None
        out = self.root.parent
        written = record["result"].get("files", [])
        try:
            if _manifest(out, written) != record["manifest"] or not all(
                (out / name).exists() for name in written
            ):
                return None
        except OSError:
            return None
        return record["result"]

    def save_pair(self, key: str, matches: Matches, geometry: Geometry | None) -> None:
        n = len(matches)
        inliers = np.zeros(n, bool) if geometry is None else geometry.inliers
        model = np.zeros((0, 3)) if geometry is None or geometry.model is None else geometry.model
        kind = "" if geometry is None else geometry.kind
        path = self.pair_path(key)
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                pairs=matches.pairs,
                distances=matches.distances,
                inliers=inliers,
                model=model,
                kind=np.asarray(kind),
            )

    def output_current(self, path: Path, groups: Sequence[tuple[str, ...]]) -> bool:
        """Whether the output file at ``path`` is the one this cache last wrote for ``groups``
        ((group name, cache key) in order), whole and unchanged (its size and SHA-256): then a
        rerun that changed nothing keeps it (writing a second copy beside it, as every write
        does, would not fit on a nearly full disk)."""
        record = self._outputs().get(path.name)
        try:
            return record == [self._digest(groups), path.stat().st_size, content_hash(path)]
        except OSError:
            return False

    def record_output(self, path: Path, groups: Sequence[tuple[str, ...]]) -> None:
        """Remember what :meth:`output_current` checks, once ``path`` is written."""
        outputs = self._outputs()
        outputs[path.name] = [self._digest(groups), path.stat().st_size, content_hash(path)]
        with atomic_write(self.root / "outputs.json") as tmp:
            tmp.write_text(json.dumps(outputs))

    def _outputs(self) -> dict[str, Any]:
        try:
            found = json.loads((self.root / "outputs.json").read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    @staticmethod
    def _digest(groups: Sequence[tuple[str, ...]]) -> str:
        return config_hash(groups)  # with visiontk's version: a new one writes them again

    def load_pair(self, key: str) -> tuple[Matches, Geometry | None]:
        return read_pair(self.pair_path(key))

    def cached_features(self, key: str) -> Features | None:
        """The features cached under ``key`` if their file reads back whole; one that does not
        (truncated, emptied by a power cut) is removed, to be computed again."""
        return _whole(self.features_path(key), Features.load)

    def cached_pair(self, key: str) -> tuple[Matches, Geometry | None] | None:
        """As :meth:`cached_features`, for a pair's result."""
        return _whole(self.pair_path(key), read_pair)


_T = TypeVar("_T")


def _whole(path: Path, read: Callable[[Path], _T]) -> _T | None:
    if not path.exists():
        return None
    try:
        return read(path)
    except VisiontkError:
        path.unlink(missing_ok=True)
        return None


class CacheFileError(VisiontkError):
    """A cached result that cannot be read back whole: it is computed again."""


def read_pair(path: Path) -> tuple[Matches, Geometry | None]:
    """A pair's matches and geometry from its cache file; :class:`CacheFileError` when the
    file is not one whole (truncated, emptied by a power cut, arrays that disagree)."""
    data = read_npz(path, CacheFileError, kinds="biufU")
    try:
        pairs, distances, inliers = data["pairs"], data["distances"], data["inliers"]
        kind, model = str(data["kind"]), data["model"]
    except KeyError as exc:
        raise CacheFileError(f"{path}: no {exc.args[0]} array") from None
    n = len(pairs)
    if (
        pairs.ndim != 2
        or pairs.shape[1:] != (2,)
        or distances.shape != (n,)
        or inliers.shape != (n,)
        or kind not in ("", *MODELS)
    ):
        raise CacheFileError(f"{path}: arrays that do not make one pair's result")
    matches = Matches(pairs.astype(np.int64), distances.astype(np.float32))
    geometry = (
        Geometry(kind, model if model.shape == (3, 3) else None, inliers.astype(bool))
        if kind
        else None
    )
    return matches, geometry


def ensure_room(path: Path, sources: Iterable[str | os.PathLike[str]]) -> None:
    """Raise ENOSPC before an HDF5 file gathered from the cache files ``sources`` is written,
    when its folder's disk has not room for it: HDF5 meeting a full disk while it writes
    fails at close, in destructors, and once crashed the process (h5py 3.x)."""
    import errno

    sizes = [f.stat().st_size for f in map(Path, sources) if f.exists()]
    need = 3 * sum(sizes) // 2 + 16384 * len(sizes) + (1 << 20)
    st = os.statvfs(path.parent)
    if st.f_bavail * st.f_frsize < need:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def write_features_h5(path: Path, items: Iterable[tuple[str, str, Features]], version: str) -> None:
    """``items``: (name, key, Features) in the order to write them."""
    import h5py

    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["convention"] = CONVENTION
        h5.attrs["visiontk_version"] = version
        for name, key, f in items:
            g = h5.create_group(escape(name))
            g.create_dataset("keypoints", data=f.xy)
            g.create_dataset("descriptors", data=f.descriptors)
            g.create_dataset("scores", data=f.response)
            g.create_dataset("sizes", data=f.size)
            g.create_dataset("angles", data=f.angle)
            g.create_dataset("octaves", data=f.octave)
            g.attrs["image_size"] = np.asarray(f.image_size, np.int64)
            g.attrs["key"] = key


def write_matches_h5(
    path: Path, items: Iterable[tuple[str, str, str, Matches, Geometry | None]], version: str
) -> None:
    """``items``: (name_a, name_b, key, Matches, Geometry or None)."""
    import h5py

    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["visiontk_version"] = version
        for name_a, name_b, key, m, geometry in items:
            g = h5.create_group(pair_group(name_a, name_b))
            g.attrs["key"] = key
            g.create_dataset("matches", data=m.pairs)
            g.create_dataset("distances", data=m.distances)
            inliers = np.zeros(len(m), bool) if geometry is None else geometry.inliers
            g.create_dataset("inliers", data=inliers)
            if geometry is not None and geometry.model is not None:
                g.create_dataset("model", data=geometry.model)
            g.attrs["image_a"] = name_a
            g.attrs["image_b"] = name_b
            g.attrs["model_kind"] = "" if geometry is None else geometry.kind


def _manifest(out: Path, names: list[str]) -> dict[str, list[int | str]]:
    """{file under ``out``: [size, SHA-256]} of the named files and of every file in the named
    folders (taken once the stage is done with them: the mapper had already opened
    ``database.db``, which can change its header)."""
    files: dict[str, list[int | str]] = {}
    for name in names:
        top = out / name
        found = [top] if top.is_file() else sorted(q for q in top.rglob("*") if q.is_file())
        for f in found:
            files[f.relative_to(out).as_posix()] = [f.stat().st_size, content_hash(f)]
    return files


def read_features_h5(path: str | os.PathLike[str]) -> dict[str, Features]:
    """{image name: Features} from a features.h5 (for users and tests)."""
    import h5py

    out: dict[str, Features] = {}
    with h5py.File(path, "r") as h5:
        for group_name, g in h5.items():
            out[unescape(group_name)] = Features(
                g["keypoints"][()],
                g["sizes"][()],
                g["angles"][()],
                g["scores"][()],
                g["octaves"][()],
                g["descriptors"][()],
                # Features checks that it is two sizes
                cast("tuple[int, int]", tuple(int(v) for v in g.attrs["image_size"])),
            )
    return out
