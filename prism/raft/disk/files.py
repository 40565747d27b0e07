"""Blocking file helpers: whole writes, fsync that can be switched off, atomic replacement.

``os.fsync`` is always looked up on the ``os`` module at call time (never imported by name)
so that tests can count the calls.

An atomic write is the classic sequence: write ``<name>.tmp``, fsync it, rename it over
``<name>``, fsync the directory. A crash at any point leaves either no ``<name>`` (or the
old one) and perhaps a ``.tmp`` file, or the complete new file: never a torn one under the
final name. The directory fsync is what makes the rename itself durable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

TMP_SUFFIX: Final = ".tmp"


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte: ``os.write`` may write less than it is given."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync_fd(fd: int, *, fsync: bool) -> None:
    if fsync:
        os.fsync(fd)


def sync_directory(directory: Path, *, fsync: bool) -> None:
    """Make the directory's entries (created, renamed, deleted files) durable."""
    if not fsync:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: Iterable[bytes | memoryview], *, fsync: bool) -> None:
    """Replace ``path`` with ``chunks`` so that a crash leaves the old file or the new one."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        sync_fd(fd, fsync=fsync)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_directory(path.parent, fsync=fsync)


def truncate(path: Path, size: int, *, fsync: bool) -> None:
    """Cut ``path`` to ``size`` bytes, durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        sync_fd(fd, fsync=fsync)
    finally:
        os.close(fd)
