"""Run visiontk's CUDA kernels on the CPU: a stand-in for ``cupy.RawModule`` over numpy arrays.

The .cu source is compiled by g++ with ``cuda_host.h`` (a block's threads as fibers that
switch at __syncthreads, std::atomic_ref for atomics), so the kernels' indexing, shared-memory and
compaction logic is tested in CI, where there is no GPU. It cannot show speed, warp-level
behaviour or memory-model races; the GPU tests (tests/sift/test_gpu.py) do that where a GPU exists.
Needs g++ (C++20).

The launcher is stricter than CuPy on purpose: every argument must have exactly the C type
the kernel declares (a numpy scalar of that dtype, or a C-contiguous array of that element
type), so a Python int passed where the kernel wants ``int`` (CuPy would send 8 bytes) fails.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("cuda_host.h")
#: Kernels that exercise the emulator itself (barriers, shared memory, atomics).
SELFTEST = Path(__file__).with_name("selftest.cu")
GXX = shutil.which("g++")
#: Extra g++ flags, e.g. "-fsanitize=address" to catch out-of-bounds accesses in the kernels
#: (run Python with LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0).
EXTRA_FLAGS = os.environ.get("CUDA_EMULATOR_FLAGS", "").split()

_C_TYPES = {
    "float": np.float32,
    "double": np.float64,
    "int": np.int32,
    "unsigned int": np.uint32,
    "unsigned": np.uint32,
    "long long": np.int64,
    "unsigned long long": np.uint64,
    "unsigned char": np.uint8,
    "short": np.int16,
    "unsigned short": np.uint16,
}
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def parse_kernels(source: str) -> dict[str, list[tuple[str, bool]]]:
    """Kernel name -> [(C element type, is_pointer), ...] for every ``extern "C"`` kernel."""
    kernels = {}
    for match in _KERNEL.finditer(source):
        name, params = match.groups()
        parsed = []
        for param in params.split(","):
            words = param.replace("*", " * ").split()[:-1]  # drop the parameter's name
            pointer = "*" in words
            base = " ".join(w for w in words if w not in ("const", "*", "__restrict__"))
            if base not in _C_TYPES:
                raise TypeError(f"kernel {name}: parameter type {param.strip()!r} not supported")
            parsed.append((base, pointer))
        kernels[name] = parsed
    return kernels


def uses_barriers(source: str, name: str) -> bool:
    """Whether kernel ``name``'s body calls __syncthreads (it then runs its threads as fibers).
    Device functions called from a kernel must not: the .cu files keep barriers in kernels."""
    start = source.index("{", next(m.end() for m in _KERNEL.finditer(source) if m.group(1) == name))
    depth = 0
    for end in range(start, len(source)):
        depth += {"{": 1, "}": -1}.get(source[end], 0)
        if depth == 0:
            return "__syncthreads" in source[start:end]
    raise ValueError(f"kernel {name}: unbalanced braces")


class EmulatedModule:
    """``cupy.RawModule(code=...)`` for the CPU: ``get_function(name)(grid, block, args)``."""

    def __init__(self, source: Path, build_dir: Path, options=()):
        """``options``: the module's compile options; its -D definitions reach g++ (as
        visiontk._sift._gpu_kernels.compile_options() gives them to NVRTC)."""
        text = Path(source).read_text()
        defines = [o for o in options if o.startswith("-D")]
        self.signatures = parse_kernels(text)
        wrappers = "".join(
            f'extern "C" void emu_{name}(const unsigned* g, const unsigned* b, void** a) '
            f"{{ emu::launch({name}, g, b, a, {str(uses_barriers(text, name)).lower()}); }}\n"
            for name in self.signatures
        )
        unit = f'#include "{HEADER}"\n#include "{Path(source).resolve()}"\n{wrappers}'
        digest = hashlib.sha256(
            (unit + text + HEADER.read_text() + " ".join(EXTRA_FLAGS) + " ".join(defines)).encode()
        ).hexdigest()[:16]
        library = Path(build_dir) / f"{Path(source).stem}-{digest}.so"
        if not library.exists():
            if GXX is None:  # as running a missing compiler would say
                raise FileNotFoundError("g++ is not on PATH: the emulator compiles kernels with it")
            cpp = library.with_suffix(".cpp")
            cpp.write_text(unit)
            subprocess.run(
                [
                    GXX,
                    "-std=c++20",
                    "-O2",
                    "-fPIC",
                    "-shared",
                    "-pthread",
                    "-Wall",
                    "-Werror",
                    "-Wno-unknown-pragmas",
                    *defines,
                    *EXTRA_FLAGS,
                    str(cpp),
                    "-o",
                    str(library),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
        self._library = ctypes.CDLL(str(library))

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self.signatures:
            raise KeyError(f"no kernel {name!r} in the module")
        return EmulatedKernel(name, self.signatures[name], getattr(self._library, f"emu_{name}"))


class EmulatedKernel:
    def __init__(self, name, signature, entry):
        self.name, self.signature, self._entry = name, signature, entry

    def __call__(self, grid, block, args, **_launch_options):
        if len(args) != len(self.signature):
            raise TypeError(
                f"{self.name}: {len(args)} arguments for {len(self.signature)} parameters"
            )
        values = [self._argument(i, a) for i, a in enumerate(args)]
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        dims = [(ctypes.c_uint * 3)(*[*map(int, dim), 1, 1][:3]) for dim in (grid, block)]
        if any(d < 1 for dim in dims for d in dim):
            raise ValueError(f"{self.name}: empty grid {tuple(grid)} or block {tuple(block)}")
        self._entry(dims[0], dims[1], pointers)

    def _argument(self, i, value):
        ctype, pointer = self.signature[i]
        dtype = np.dtype(_C_TYPES[ctype])
        where = f"{self.name} argument {i} ({ctype}{'*' if pointer else ''})"
        if pointer:
            if not isinstance(value, np.ndarray) or value.dtype != dtype:
                raise TypeError(
                    f"{where}: got {type(value).__name__} {getattr(value, 'dtype', '')}"
                )
            if not value.flags.c_contiguous:
                raise TypeError(f"{where}: array is not C-contiguous")
            return ctypes.c_void_p(value.ctypes.data)
        if not isinstance(value, np.generic) or value.dtype != dtype:
            raise TypeError(f"{where}: got {type(value).__name__} {getattr(value, 'dtype', '')}")
        return np.ctypeslib.as_ctypes(np.array(value, dtype))
