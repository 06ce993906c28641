"""What every ``visiontk`` command shares: input and output types, the SIFT flags (their
defaults and help values come from the definitions in the library), and the error handling
that turns any failure into one line and an exit status."""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import click

from visiontk.devices import DEVICES
from visiontk.errors import VisiontkError, one_line, out_of_memory
from visiontk.extract import DEFAULT_PRESET, SIFT_PRESETS
from visiontk.io import DEFAULT_MAX_PIXELS

#: Input files: an unreadable one is reported by the readers, listed like a missing one, not
#: refused as a usage error before anything is done.
INPUT = click.Path(path_type=Path, readable=False)


class OutputFolder(click.Path):
    """An output folder, never the empty string (which a Path reads as the current folder,
    so that ``--out ''`` wrote a run into it)."""

    def __init__(self):
        super().__init__(file_okay=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty name; give a folder", param, ctx)
        # click types what it returns as str | bytes | PathLike: it is the str it was given
        return Path(os.fsdecode(super().convert(value, param, ctx)))


OUT_FOLDER = OutputFolder()

# Flags take their defaults from the one definition of each option (SiftOptions, io, backend);
# SIFT flags left out take the preset's value.
_ACCURATE, _OPENCV = SIFT_PRESETS["accurate"], SIFT_PRESETS["opencv"]
PRESET = click.option(
    "--preset",
    type=click.Choice(list(SIFT_PRESETS)),
    default=DEFAULT_PRESET,
    show_default=True,
    help="SIFT preset: accurate (COLMAP's choices, "
    f"{'RootSIFT, ' if _ACCURATE['rootsift'] else ''}COLMAP's cap of "
    f"{_ACCURATE['max_features']} detections) or opencv (cv2.SIFT's "
    "keypoints and descriptors); the flags below override it.",
)
DEVICE = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to compute: cuda needs CuPy and an NVIDIA GPU; auto uses one when present.",
)
MAX_FEATURES = click.option(
    "--max-features",
    type=click.IntRange(min=0),
    default=None,
    help="Keypoint cap (0 = all): accurate keeps COLMAP's whole "
    "coarsest levels past N detections, opencv the strongest N  "
    f"[default: as the preset, {_ACCURATE['max_features']} or "
    f"{_OPENCV['max_features']}]",
)
MAX_PIXELS = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse larger images.",
)
UPRIGHT = click.option(
    "--upright/--no-upright", default=None, help="No orientation: every angle is 0."
)
ROOTSIFT = click.option(
    "--rootsift/--no-rootsift", default=None, help="RootSIFT descriptors [default: as the preset]."
)


def sift_options(func):
    """The SIFT options every command that extracts features takes."""
    for option in reversed((PRESET, MAX_FEATURES, UPRIGHT, ROOTSIFT, MAX_PIXELS, DEVICE)):
        func = option(func)
    return func


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: work so far kept, one line, a rerun resumes."""


def on_sigterm(signum, frame):
    raise Terminated


def user_errors(func):
    """Turn visiontk's errors into one line on stderr and the error's exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VisiontkError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except BrokenPipeError:
            # the reader went away (`visiontk stages | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
        except KeyboardInterrupt as exc:
            # finished items are already on disk (atomically); a rerun resumes from them
            terminated = isinstance(exc, Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        except Exception as exc:
            if not out_of_memory(exc):
                if os.environ.get("VISIONTK_DEBUG"):
                    raise
                click.echo(
                    f"error: internal error ({type(exc).__name__}: {one_line(exc)}); "
                    "set VISIONTK_DEBUG=1 for details",
                    err=True,
                )
                sys.exit(1)
            params = {p.name for p in click.get_current_context().command.params}
            hint = " (try --max-features or a smaller image)" if "max_features" in params else ""
            click.echo(f"error: out of memory{hint}", err=True)
            sys.exit(1)

    return wrapper


def not_empty(ctx, param, value: str) -> str:
    """``--images ''`` searched the current folder (a Path reads '' as '.')."""
    if not value.strip():
        raise click.BadParameter("an empty name; give a folder, a pattern or a list", ctx, param)
    return value


def check_cpu_settings() -> None:
    """Refuse, before any work, the CPU settings every item would trip on (VISIONTK_SIMD, and a
    NUMBA_CPU_FEATURES that LLVM would abort on): an OptionError, said once."""
    from visiontk import simd

    simd.level()  # reads and checks both settings


def compile_first(device: str) -> None:
    """On the first use after an install, say why this run takes longer, and
    compile the CPU kernels into the cache (the GPU runs other code)."""
    from visiontk._numba_cache import COMPILE_NOTICE, compile_kernels, kernels_compiled
    from visiontk.devices import resolve_device

    check_cpu_settings()
    if device != "cuda" and resolve_device(device) == "cpu" and not kernels_compiled():
        click.echo(COMPILE_NOTICE, err=True)
        compile_kernels()


def exit_if_failed(failed: list, total: int) -> None:
    """After a batch: list the inputs that failed on stderr and exit 1 if there were any."""
    if failed:
        click.echo(f"{len(failed)} of {total} images failed:", err=True)
        for line in failed:
            click.echo(f"  {one_line(line)}", err=True)
        sys.exit(1)
