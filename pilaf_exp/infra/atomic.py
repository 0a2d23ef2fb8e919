"""Crash-safe file writes: a reader sees the old file or the whole new one, never a torn one.
Every write that must survive a crash or a concurrent writer goes through here."""

from __future__ import annotations

import os
import shutil
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
    """`write(file)` into a temp file beside `path`, then `publish` it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        publish(Path(staging), path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def publish_once(staging: Path, target: Path) -> None:
    """Move a finished cache entry (file or directory) into place in one rename. If a concurrent
    run got there first, keep theirs (same key, same content) so every run reads the same bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, target)
    except OSError:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
