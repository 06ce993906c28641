"""Progress of a run: a tqdm bar on a terminal, plain log lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time

#: Seconds between log lines when stderr is not a terminal.
LOG_EVERY = 5.0


class Progress:
    def __init__(self, total: int, unit: str, quiet: bool = False, stream=None):
        self.total, self.unit, self.quiet = total, unit, quiet
        self.stream = stream or sys.stderr
        self.count = self.failed = 0
        self._bar = None
        self._t0 = self._last = time.monotonic()

    def __enter__(self):
        if not self.quiet and self.total and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                unit=self.unit[:-1] if self.unit.endswith("s") else self.unit,
                file=self.stream,
                dynamic_ncols=True,
            )
        return self

    def advance(self, item: str, ok: bool) -> None:
        self.count += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.update(1)
            if not ok:
                self._bar.set_postfix(failed=self.failed)
            return
        now = time.monotonic()
        if self.quiet or (now - self._last < LOG_EVERY and self.count < self.total):
            return
        self._last = now
        rate = self.count / max(now - self._t0, 1e-9)
        eta = (self.total - self.count) / rate if rate else 0.0
        print(
            f"{self.unit}: {self.count}/{self.total} ({rate:.1f}/s, ETA {eta:.0f} s"
            f"{f', {self.failed} failed' if self.failed else ''})",
            file=self.stream,
            flush=True,
        )

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
