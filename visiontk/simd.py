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

The level is the highest that both the CPU and numba's target have (numba compiles for this
CPU unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name a lower one), and at most
``$VISIONTK_SIMD`` when that is set: ``VISIONTK_SIMD=avx2`` measures or tests the AVX2 path on an
AVX-512 machine. ``python -m visiontk.simd`` prints what this machine uses.
"""

from __future__ import annotations

import functools
import os
import platform

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
    try:
        import llvmlite.binding as llvm

        features = {k for k, on in llvm.get_host_cpu_features().items() if on}
    except Exception:  # no llvmlite (no numba): no kernel of ours runs anyway
        return "generic"
    return level_of(features)


def numba_level() -> str:
    """The highest level numba's target allows: this CPU's unless NUMBA_CPU_NAME or
    NUMBA_CPU_FEATURES name another (a lower one holds our kernels to it)."""
    name = os.environ.get("NUMBA_CPU_NAME", "host").strip().lower()
    features = os.environ.get("NUMBA_CPU_FEATURES", "").strip()
    if features:
        on = {f[1:] for f in features.split(",") if f.startswith("+")}
        return _lower(level_of(on), machine_level())
    if name in ("", "host"):
        return machine_level()
    named = next((lvl for lvl, names in CPU_NAMES.items() if name in names), "generic")
    return _lower(named, machine_level())


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
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host" or os.environ.get("NUMBA_CPU_FEATURES"):
        why.append(f"numba targets {os.environ.get('NUMBA_CPU_NAME', 'host')}")
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
    print(f"{cpu_model()}: visiontk SIMD level {describe()}")
