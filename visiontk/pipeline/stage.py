"""The stage protocol: a small declared unit of a pipeline.

A stage is a class with a ``name``, a ``kind``, the artefacts it reads (``inputs``) and writes
(``outputs``), an ``Options`` dataclass with defaults and validation, and optionally
``check()``, run once in the runner's process before any item. The kinds:

* ``"image"``: ``run(context) -> dict`` once per input file (``accepts``: which file suffixes a
  folder yields for it; images by default). The context holds ``path``, ``name`` and
  ``output`` (an :class:`~visiontk.pipeline.store.ItemOutput`: where the stage may write files
  of its own), and what earlier stages returned.
* ``"pairs"``: ``select(names, features) -> [(name_a, name_b), ...]`` once per run, after the
  image stages: which pairs the pair stages see (``features(name)`` loads an image's
  :class:`~visiontk.Features`). At most one per pipeline; exhaustive when there is none.
* ``"pair"``: ``run(context) -> dict`` once per selected pair (``name_a``, ``name_b``,
  ``features_a``, ``features_b``, and what earlier pair stages returned).
* ``"model"``: ``run(context) -> dict`` once per run, after the pairs, in a worker (``out``,
  ``images``, and the cache files of every image's features and every pair's matches: see
  :class:`visiontk.stages.model.ReconstructStage`). What it returns (a JSON-able dict; its
  ``files``: what it wrote, relative to ``out``) goes into summary.json under its name, and
  is reused while its inputs and options stay the same.

Stages import heavy dependencies inside ``run`` so that listing them stays cheap; stage objects
are pickled to the workers, so they hold options, not open resources.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import OptionError, VisiontkError, shown
from ..io import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from ..features import Features

KINDS = ("image", "pairs", "pair", "model")


class Stage:
    """Base class of pipeline stages (built-in and plugins alike)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "image"
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    #: A dataclass of the stage's options, with defaults and validation.
    Options: ClassVar[type[Any]] = type(None)
    #: File suffixes a folder yields when this stage comes first (image stages).
    accepts: ClassVar[frozenset[str]] = IMAGE_SUFFIXES
    #: Folders of OUT the stage writes into (``output.folder(...)``): a later run whose
    #: ``--images`` folder is OUT itself never takes their files for inputs.
    folders: ClassVar[tuple[str, ...]] = ()
    #: What the run report shows of an item's own files, as paths under OUT in which
    #: ``{stem}`` is the item's escaped name: ``report_picture`` stands for the item among the
    #: report's thumbnails (instead of the input file), ``report_page`` opens on a click.
    report_picture: ClassVar[str] = ""
    report_page: ClassVar[str] = ""
    #: Options a stage no longer takes: {name: where it went}, for a helpful error.
    moved: ClassVar[dict[str, str]] = {}

    def __init__(self, options: Any = None) -> None:
        #: an instance of :attr:`Options` (each stage's own dataclass)
        self.options: Any = options if options is not None else self.Options()

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Stage:
        """Build the stage from user options, refusing unknown or ill-typed ones in one line."""
        return cls(parse_options(cls, values or {}))

    def check(self) -> None:
        """Called once in the runner's process before any item is processed: raise a
        :class:`~visiontk.errors.VisiontkError` for a problem that would fail every item (a
        missing weights or pairs file), so the run stops before it starts. This one checks a
        ``device`` option (``"cuda"`` without a usable GPU); a stage that overrides it calls
        it too."""
        device = getattr(self.options, "device", None)
        if device is not None:
            from ..devices import resolve_device

            try:
                resolve_device(device)
            except VisiontkError as exc:  # which stage asked for it
                raise type(exc)(f"stage {self.name}: {exc}") from None

    def run(self, context: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - the protocol
        """What an "image", "pair" or "model" stage does with one item's ``context``."""
        raise NotImplementedError

    def select(
        self, names: list[str], features: Callable[[str], Features]
    ) -> list[tuple[str, str]]:  # pragma: no cover - the protocol
        """What a "pairs" stage does: the pairs of ``names`` (sorted) the pair stages see, each
        once, in a stable order; ``features(name)`` loads an image's Features for selections
        that look at them."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "options": dataclasses.asdict(self.options)}


def option_fields(stage_cls: type[Stage]) -> list[tuple[str, Any, Any]]:
    """(name, type, default) of each option of a stage class; the default as the options
    resolve it (a SIFT option left to its preset shows the preset's value)."""
    hints = typing.get_type_hints(stage_cls.Options)
    try:
        resolved = stage_cls.Options()
    except (TypeError, VisiontkError):  # a required option: no defaults to resolve
        resolved = None
    return [
        (f.name, hints[f.name], getattr(resolved, f.name, f.default))
        for f in dataclasses.fields(stage_cls.Options)
    ]


def parse_options(stage_cls: type[Stage], values: dict[str, Any]) -> Any:
    """Check names and types of ``values`` against the stage's Options and build them."""
    if not isinstance(values, dict):
        raise OptionError(f"stage {stage_cls.name}: options must be a table of name = value")
    fields = {name: typ for name, typ, _ in option_fields(stage_cls)}
    for key, value in values.items():
        if key in stage_cls.moved:
            raise OptionError(f"stage {stage_cls.name}: option {key} {stage_cls.moved[key]}")
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise OptionError(
                f"stage {stage_cls.name}: unknown option {shown(key)} (options: {known})"
            )
        if not _fits(value, fields[key]):
            raise OptionError(
                f"stage {stage_cls.name}: option {key} must be "
                f"{type_name(fields[key])}, got {shown(value)}"
            )
        if not _bounded(value):
            raise OptionError(
                f"stage {stage_cls.name}: option {key} must be a finite number "
                f"within ±{INT_LIMIT:,}, got {shown(value)}"
            )
    try:
        return stage_cls.Options(**values)
    except OptionError as exc:
        message = str(exc)
        if not message.startswith(f"stage {stage_cls.name}"):
            message = f"stage {stage_cls.name}: {message}"
        raise OptionError(message) from None


#: The largest magnitude a numeric option takes (a C int's): no option needs more, and
#: numbers past it overflow the libraries they are handed to.
INT_LIMIT = 2**31 - 1


def _bounded(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return math.isfinite(value) and abs(value) <= INT_LIMIT


def _fits(value: object, typ: Any) -> bool:
    if typing.get_origin(typ) is typing.Literal:  # a choice, e.g. backend.Device
        return value in typing.get_args(typ)
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is str:
        return isinstance(value, str)
    args = typing.get_args(typ)
    if args:  # Optional[X] and other unions
        return any(_fits(value, a) if a is not type(None) else value is None for a in args)
    return True


def type_name(typ: Any) -> str:
    """How an option's type reads in messages and in ``visiontk stages``."""
    if typing.get_origin(typ) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(typ)))
    args = typing.get_args(typ)
    if len(args) == 2 and type(None) in args:  # X | None: None means "the default"
        return type_name(next(a for a in args if a is not type(None)))
    if args:
        return " or ".join("None" if a is type(None) else a.__name__ for a in args)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        typ, getattr(typ, "__name__", str(typ))
    )
