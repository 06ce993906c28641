"""Unreadable files for tests that run as root (as CI does), which ignores file modes."""

from __future__ import annotations

import os


def permissions_apply() -> None:
    """For a child process (``preexec_fn``): root loses the capabilities that bypass file
    permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set before
    exec), so a file or folder with mode 000 is unreadable to it as to any user."""
    import ctypes

    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
