"""Crash-safe file writes: a reader sees the old file or the whole new one, never a torn one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, path: Path) -> None:
    """Make a finished file at `staging` durable, then rename it over `path`."""
    with open(staging, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(staging, path)
    fsync_dir(path.parent)


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(file)` into a temp file beside `path`, fsync it, rename it over `path`, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
