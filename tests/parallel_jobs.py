"""Module-level jobs for tests/test_parallel.py (spawned workers import them by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_marker(directory: str, i: int, fail: bool = False) -> int:
    """Write ``directory/job{i}`` (after a short wait, so jobs overlap) and return ``i * i``;
    raise instead when ``fail``."""
    time.sleep(0.2)
    if fail:
        raise RuntimeError(f"job {i} failed on purpose")
    Path(directory, f"job{i}").write_text(str(os.getpid()))
    return i * i


def sleep_forever(directory: str, i: int) -> None:
    """Write this worker's pid to ``directory/pid{i}``, then sleep for a minute."""
    Path(directory, f"pid{i}").write_text(str(os.getpid()))
    time.sleep(60)
