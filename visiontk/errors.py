"""Errors that visiontk raises for bad input; each carries a one-line message for users."""


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
