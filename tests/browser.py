"""Headless Chromium for the tests that look at a page as a person would (CI installs it:
.ci/run)."""

import shutil
import subprocess
from pathlib import Path


def browser() -> str | None:
    """The Chromium on this machine, or None."""
    return next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )


def screenshot(page: Path, shot: Path, size: tuple[int, int]) -> Path:
    """``page`` drawn at ``size`` (width, height) into the PNG ``shot``."""
    subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={shot.parent / (shot.stem + '-profile')}",
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return shot
