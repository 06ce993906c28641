"""Reading arrays from files that may be hostile: PyTorch checkpoints, safetensors and .npz.

What the readers guarantee, whatever the file holds:

* **Nothing is executed.** A ``.pth`` pickle may name only the few globals a state dict needs
  (tensor rebuilding, storage types, OrderedDict), each a fresh object per file, so a pickle
  can neither call anything else nor change what the next file sees.
* **No read outside the data.** Every tensor is checked before a view is made: offset and
  strides non-negative, no more elements than its storage holds, the highest element it
  addresses inside the storage; a safetensors or ``.npy`` entry's byte count must equal its
  shape × dtype size.
* **Bounded memory.** A file may not make the reader decompress, or hand out as arrays, more
  than :func:`max_bytes` (default 8 GiB; environment variable ``VISIONTK_MAX_WEIGHTS_BYTES``),
  checked from the headers before anything is read; deflated entries may not expand more than
  :data:`MAX_COMPRESSION_RATIO` times (a zip bomb); a pickle may not exceed
  :data:`MAX_PICKLE_BYTES` and is read by the pure-Python unpickler, whose memo is a dict (the C
  one allocates its memo from an index in the file: 9 bytes asked it for 4 GB).
* **One line.** Every problem is the caller's error class (a
  :class:`~visiontk.errors.VisiontkError`) whose message names the file and the problem.

One module per format: :mod:`.pth`, :mod:`.safetensors`, :mod:`.npz`; what they share (the
limits, the budget, zip archives) is :mod:`._common`.
"""

from ._common import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES_ENV,
    MAX_COMPRESSION_RATIO,
    MAX_HEADER_BYTES,
    MAX_PICKLE_BYTES,
    max_bytes,
    regular_file,
)
from .npz import read_npz, real_float32
from .pth import decode, find_state_dict, read_pth
from .safetensors import read_safetensors

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "MAX_COMPRESSION_RATIO",
    "MAX_HEADER_BYTES",
    "MAX_PICKLE_BYTES",
    "decode",
    "find_state_dict",
    "max_bytes",
    "read_npz",
    "read_pth",
    "read_safetensors",
    "real_float32",
    "regular_file",
]
