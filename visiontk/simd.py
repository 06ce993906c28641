"""Which SIMD instructions visiontk's own CPU kernels use, and how to hold them lower.

The levels, lowest first (each a path of the exact matcher's integer distance kernel,
:mod:`visiontk.matching._cpu_kernels_int`):

- ``generic``: no kernel of ours; float32 BLAS (any CPU: older x86, aarch64).
- ``avx2``: 16-bit multiply-add into 32-bit sums (``vpmaddwd``, 256-bit): Haswell and later,
  AMD Zen 1 to 3.
- ``avxvnni``: ``vpdpbusd`` on 256-bit registers: Intel Alder Lake and later client CPUs.
- ``avx512vnni``: ``vpdpbusd`` on 512-bit registers: Intel Ice Lake / Cascade Lake servers and
  later, AMD Zen 4 and later.

Every level gives the same neighbours bit for bit; only the speed differs.

The level is the highest that both the CPU and numba's target have, and at most
``$VISIONTK_SIMD`` when that is set: ``VISIONTK_SIMD=avx2`` measures or tests the AVX2 path on an
AVX-512 machine. numba compiles for this CPU's own features unless ``NUMBA_CPU_FEATURES`` is set
(or ``NUMBA_CPU_NAME=generic``): a CPU name alone changes nothing, so :data:`AVX2_NUMBA` sets
both to hold everything numba compiles to a Haswell. ``python -m visiontk.simd`` prints what
this machine uses.
"""

from __future__ import annotations

import functools
import os
import platform
import re

from .errors import OptionError

#: The environment variable that holds visiontk's own choice at or below a level.
ENV = "VISIONTK_SIMD"
#: Lowest first.
LEVELS = ("generic", "avx2", "avxvnni", "avx512vnni")
#: What each level needs of the CPU (LLVM's feature names): any one of the sets.
NEEDS = {
    "avx2": ({"avx2"},),
    "avxvnni": ({"avxvnni"}, {"avx512vnni", "avx512vl"}),
    "avx512vnni": ({"avx512vnni", "avx512bw"},),
}
#: LLVM CPU names (as NUMBA_CPU_NAME takes them) whose features numba will target, by level;
#: a name not listed counts as ``generic``, unless NUMBA_CPU_FEATURES says more.
CPU_NAMES = {
    "avx512vnni": [
        "cascadelake",
        "cooperlake",
        "icelake-client",
        "icelake-server",
        "tigerlake",
        "rocketlake",
        "sapphirerapids",
        "emeraldrapids",
        "graniterapids",
        "graniterapids-d",
        "diamondrapids",
        "znver4",
        "znver5",
    ],
    "avxvnni": [
        "alderlake",
        "raptorlake",
        "meteorlake",
        "gracemont",
        "arrowlake",
        "arrowlake-s",
        "lunarlake",
        "pantherlake",
        "sierraforest",
        "grandridge",
        "clearwaterforest",
    ],
    "avx2": [
        "haswell",
        "broadwell",
        "skylake",
        "skylake-avx512",
        "skx",
        "cannonlake",
        "x86-64-v3",
        "x86-64-v4",
        "znver1",
        "znver2",
        "znver3",
        "bdver4",
    ],
}


def level_of(features: set[str]) -> str:
    """The highest level a set of LLVM feature names allows."""
    best = "generic"
    for name in LEVELS[1:]:
        if any(need <= features for need in NEEDS[name]):
            best = name
    return best


@functools.cache
def machine_level() -> str:
    """The highest level this CPU executes (``generic`` off x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    return level_of(set(_host_features()))


#: The features each level stands for, as a named CPU's defaults (LLVM's names).
LEVEL_FEATURES = {
    "generic": set(),
    "avx2": {"avx2", "fma"},
    "avxvnni": {"avx2", "fma", "avxvnni"},
    # not avxvnni: AMD Zen 4 has AVX-512 VNNI without it (counting less is the safe side)
    "avx512vnni": {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni"},
}
#: numba's settings that hold everything it compiles to a Haswell (AVX2) CPU: the name alone is
#: not enough, since numba passes this CPU's own feature list unless NUMBA_CPU_FEATURES is set.
AVX2_NUMBA = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,+fma"}


def numba_features() -> set[str]:
    """The features numba compiles for, as it decides: NUMBA_CPU_FEATURES when set, applied
    in order over the named CPU's defaults (NUMBA_CPU_NAME; this CPU's when unset); else none
    for the name ``generic``, and this CPU's own features for any other name.

    A feature list numba would hand LLVM in a form LLVM aborts on (an item not starting with
    + or -, spaces) is an :class:`OptionError` here instead."""
    name = os.environ.get("NUMBA_CPU_NAME") or None
    listed = os.environ.get("NUMBA_CPU_FEATURES")
    if listed is None or (listed == "" and name is None):
        if name is not None and name.lower() == "generic":
            return set()
        return set(_host_features())
    items = listed.split(",") if listed else []
    bad = [item for item in items if not _FEATURE.fullmatch(item)]
    if bad:
        raise OptionError(
            f"NUMBA_CPU_FEATURES={listed!r}: numba hands it to LLVM, which aborts on {bad[0]!r}:"
            " give comma-separated +feature / -feature items without spaces, or unset it"
        )
    if name is None:
        found = set(_host_features())
    else:
        level = next((lvl for lvl, names in CPU_NAMES.items() if name in names), "generic")
        found = set(LEVEL_FEATURES[level])
    for item in items:
        feature = item[1:]
        if item[0] == "+":
            found.add(feature)
        else:  # as LLVM: turning a feature off turns off those built on it
            found -= {f for f in found if f == feature or feature in _NEEDS_OFF.get(f, ())}
    return found


def numba_level() -> str:
    """The highest level numba's target allows (:func:`numba_features`), never above this
    CPU's: a lower one holds our kernels to it."""
    return _lower(level_of(numba_features()), machine_level())


_FEATURE = re.compile(r"[+-][a-z0-9][a-z0-9._-]*")
#: What each feature is built on: turned off with any of them.
_NEEDS_OFF = {
    "fma": ("avx",),
    "avx2": ("avx",),
    "avxvnni": ("avx2", "avx"),
    **{
        f: ("avx512f", "avx2", "avx")
        for f in ("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512dq", "avx512cd")
    },
}


@functools.cache
def _host_features() -> frozenset[str]:
    try:
        import llvmlite.binding as llvm

        return frozenset(k for k, on in llvm.get_host_cpu_features().items() if on)
    except Exception:  # no llvmlite: no numba either
        return frozenset()


def requested() -> str | None:
    """``$VISIONTK_SIMD`` checked (None when unset or empty)."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    if value not in LEVELS:
        raise OptionError(f"{ENV}={value!r}: expected one of {', '.join(LEVELS)}")
    return value


def level() -> str:
    """The level visiontk's kernels use now: the machine's and numba's target's, held to
    ``$VISIONTK_SIMD`` when set (never above what the CPU and target have)."""
    found = numba_level()
    asked = requested()
    return found if asked is None else _lower(asked, found)


def describe() -> str:
    """One line for reports and benchmark tables: the level used and why."""
    used, cpu = level(), machine_level()
    why = []
    if requested() is not None:
        why.append(f"{ENV}={requested()}")
    numba = [
        f"{k}={os.environ[k]}" for k in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES") if k in os.environ
    ]
    if numba:
        why.append(" ".join(numba))
    held = f", held by {' and '.join(why)}" if why and used != cpu else ""
    return f"{used} (this CPU: {cpu}{held})"


def cpu_model() -> str:
    """The CPU's model name as the OS gives it (``/proc/cpuinfo`` on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _lower(a: str, b: str) -> str:
    return min(a, b, key=LEVELS.index)


if __name__ == "__main__":
    try:
        print(f"{cpu_model()}: visiontk SIMD level {describe()}")
    except OptionError as exc:
        raise SystemExit(f"error: {exc}") from None
