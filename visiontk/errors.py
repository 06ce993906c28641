"""Errors that visiontk raises for bad input; each carries a one-line message for users."""

import reprlib

#: How a value a user gave is shown in a message: a few items, a short string, never the
#: whole of it (a YAML file's aliases can make a value whose full repr fills the memory).
_SHOWN = reprlib.Repr()  # (Python 3.11's takes no keywords)
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 2, 60, 60, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4


def as_text(name: str) -> str:
    """``name`` as text that every format takes: the bytes of a file name that are not UTF-8
    (which Python holds as lone surrogates, and HDF5, SQLite and HTML refuse) as ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(text) -> str:
    """``text`` with control characters (a newline in a file name, say) and the bytes of a
    file name that are not UTF-8 shown escaped, so a message stays one line and a name cannot
    forge output."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in as_text(str(text)))


def shown(value) -> str:
    """``repr(value)``, bounded in length and in the work it takes."""
    return _SHOWN.repr(value)


class VisiontkError(Exception):
    """Base class: a problem with what the user gave us, reported in one line."""

    exit_code = 1


class ImageError(VisiontkError):
    """An image file or array cannot be used (missing, corrupt, wrong shape, too large)."""


class OptionError(VisiontkError):
    """An option has an invalid value."""

    exit_code = 2


class DeviceError(VisiontkError):
    """The requested compute device is not available."""


class FeaturesError(VisiontkError):
    """Arrays that do not describe one set of keypoints (lengths, shapes, types, NaN)."""


class FeaturesFileError(FeaturesError):
    """A saved features file cannot be read."""


class WeightsError(VisiontkError):
    """A weights file is missing, unreadable, of the wrong layout, or refused as unsafe."""


class DiskFullError(VisiontkError):
    """The disk a run writes to is full: the run stops, its finished work kept."""


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is running out of memory: Python's MemoryError (CuPy's too) or
    OpenCV's "Insufficient memory" (its error -4), which is no MemoryError."""
    return isinstance(exc, MemoryError) or (
        type(exc).__module__.startswith("cv2") and "Insufficient memory" in str(exc)
    )
