"""WAL segment files: their names, and reading one into frames up to the first bad byte.

Segments are ``wal-<seq>.log`` with ``seq`` zero padded to 16 digits, numbered from 1 with
no gaps: the newest is the one being appended to, compaction deletes from the oldest. A
segment is a run of frames (``prism.raft.disk.records``) with nothing between or after them;
its first frame is always a ``SEGMENT_START``.

This module only reads: it reports where the well-formed frames stop and whether anything
well formed follows. Recovery (``prism.raft.disk.recovery``) decides whether that is a torn
tail to cut or damage to refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from prism.raft.disk.records import Frame, find_valid_frame, read_frame

_NAME: Final = re.compile(r"wal-(\d{16})\.log")


def segment_name(seq: int) -> str:
    return f"wal-{seq:016d}.log"


def parse_segment_name(name: str) -> int | None:
    """The sequence number if ``name`` is a segment file's name."""
    match = _NAME.fullmatch(name)
    return int(match[1]) if match else None


@dataclass(frozen=True, slots=True)
class Scan:
    """A segment read front to back."""

    frames: list[Frame]  # the well-formed frames from byte 0, in order
    stop: int  # where they stop: the size of the data when nothing is wrong
    problem: str | None  # why the frame at ``stop`` is not well formed, if it is not
    valid_after: int | None  # the offset of a well-formed frame after ``stop``, if any


def scan_segment(data: memoryview) -> Scan:
    frames: list[Frame] = []
    offset = 0
    while offset < len(data):
        frame = read_frame(data, offset)
        if not isinstance(frame, Frame):
            return Scan(frames, offset, frame, find_valid_frame(data, offset + 1))
        frames.append(frame)
        offset = frame.end
    return Scan(frames, offset, None, None)
