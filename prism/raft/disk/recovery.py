"""Rebuilding a disk storage from its directory: replay, checks, and the repairs a crash needs.

Recovery reads everything and checks everything before it changes anything: if it raises
``StorageCorrupt``, the directory is exactly as it found it. Only then does it repair what
a crash can leave behind, and it says so in ``notes`` (also logged as warnings):

* a torn tail on the last segment: an incomplete frame header, a payload cut short, or a
  frame whose checksum fails with no well-formed frame anywhere after it; plus the records
  of a save group that lost its last record. The file is truncated to the end of the last
  complete group and fsynced.
* an empty last segment (a crash while a new segment was being started): it gets its
  ``SEGMENT_START`` written on open.
* snapshot files other than the one in force: a newer one whose ``SNAPSHOT`` record never
  became durable (the save that wrote it did not complete), or an older one whose deletion
  did not. Leftover ``.tmp`` files of interrupted atomic writes. All are deleted.

Everything else is ``StorageCorrupt``, with the file and byte offset: a bad frame with a
well-formed frame after it (damage in the middle: a torn write cannot produce it); any bad
frame or unfinished group in a segment that is not the last; a payload that does not decode
despite its checksum; a gap in the segment numbers; a segment whose header disagrees with
what the segments before it left; entries that do not continue the log; entries the
snapshot does not cover that no segment holds (a deleted segment); a missing snapshot file,
or one that fails its checks.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from prism.errors import StorageCorrupt
from prism.raft.disk.files import TMP_SUFFIX, sync_directory, truncate
from prism.raft.disk.logstate import LogState
from prism.raft.disk.records import Frame, Record, SegmentStart, decode_records
from prism.raft.disk.segments import parse_segment_name, scan_segment, segment_name
from prism.raft.disk.snapshots import parse_snapshot_name, read_snapshot, snapshot_name
from prism.raft.messages import Entry
from prism.raft.snapshot import Snapshot

logger = logging.getLogger("prism.raft.disk")


@dataclass(slots=True)
class SegmentInfo:
    """What the writer needs to know about one segment file."""

    seq: int
    path: Path
    size: int
    # Compaction may delete this segment once the snapshot covers this index (0: no entry).
    max_entry_index: int = 0


@dataclass(slots=True)
class Recovery:
    """The storage as the directory holds it, after repairs."""

    state: LogState
    snapshot: Snapshot | None
    snapshot_path: Path | None
    segments: list[SegmentInfo]  # oldest first; empty for a new directory
    needs_segment_start: bool  # the last segment is empty: write its SEGMENT_START
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """Repairs decided during the checks, carried out only once all of them pass."""

    cut: tuple[Path, int] | None = None
    delete: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def recover(directory: Path, *, fsync: bool) -> Recovery:
    """Read ``directory`` back; raise StorageCorrupt, or repair what a crash left and say so."""
    plan = _Plan()
    segments, snapshots = _list(directory, plan)
    if not segments:
        if snapshots:
            name = sorted(path.name for path in snapshots.values())[0]
            raise StorageCorrupt(str(directory / name), None, "a snapshot file but no WAL")
        recovery = Recovery(LogState(), None, None, [], needs_segment_start=False)
    else:
        recovery = _replay(segments, plan)
        _choose_snapshot(directory, recovery, snapshots, plan)
    _repair(directory, plan, fsync=fsync)
    recovery.notes = plan.notes
    for note in plan.notes:
        logger.warning("%s", note)
    return recovery


def _list(directory: Path, plan: _Plan) -> tuple[list[SegmentInfo], dict[tuple[int, int], Path]]:
    segments: list[SegmentInfo] = []
    snapshots: dict[tuple[int, int], Path] = {}
    for path in sorted(directory.iterdir()):
        seq = parse_segment_name(path.name)
        key = parse_snapshot_name(path.name)
        if seq is not None:
            segments.append(SegmentInfo(seq, path, path.stat().st_size))
        elif key is not None:
            snapshots[key] = path
        elif path.name.endswith(TMP_SUFFIX) and parse_snapshot_name(path.name[: -len(TMP_SUFFIX)]):
            plan.delete.append(path)
            plan.notes.append(f"removed {path.name}, left by an interrupted snapshot write")
    segments.sort(key=lambda info: info.seq)
    for before, after in itertools.pairwise(segments):
        if after.seq != before.seq + 1:
            missing = directory / segment_name(before.seq + 1)
            raise StorageCorrupt(
                str(missing),
                None,
                f"segment missing: the WAL jumps from {before.path.name} to {after.path.name}",
            )
    return segments, snapshots


def _replay(segments: list[SegmentInfo], plan: _Plan) -> Recovery:
    state: LogState | None = None
    needs_segment_start = False
    for position, info in enumerate(segments):
        is_last = position == len(segments) - 1
        frames = _complete_frames(info, is_last=is_last, plan=plan)
        if not frames:
            if not is_last:
                raise StorageCorrupt(str(info.path), 0, "segment holds no records")
            if state is None and info.seq != 1:
                raise StorageCorrupt(
                    str(info.path), 0, "the only segment is empty, and it is not the first"
                )
            needs_segment_start = True
            plan.notes.append(
                f"{info.path.name} is empty (a crash as it was created): writing its header"
            )
            continue
        state = _replay_segment(info, frames, state)
    if state is None:
        state = LogState()
    _check_covered(state, segments[0])
    return Recovery(state, None, None, segments, needs_segment_start)


def _complete_frames(info: SegmentInfo, *, is_last: bool, plan: _Plan) -> list[Frame]:
    """The frames of the segment's complete save groups; a torn tail is planned for cutting."""
    data = memoryview(info.path.read_bytes())
    scan = scan_segment(data)
    if scan.problem is not None and (not is_last or scan.valid_after is not None):
        why = (
            f"; a valid record follows at byte {scan.valid_after}"
            if scan.valid_after is not None
            else " in a segment that is not the last"
        )
        raise StorageCorrupt(str(info.path), scan.stop, f"{scan.problem}{why}")
    complete = len(scan.frames)
    while complete and not scan.frames[complete - 1].group_end:
        complete -= 1
    unfinished = len(scan.frames) - complete
    if unfinished and not is_last:
        offset = scan.frames[complete].offset
        raise StorageCorrupt(
            str(info.path), offset, "save group without its last record, before the last segment"
        )
    cut = scan.frames[complete].offset if unfinished else scan.stop
    if cut < len(data):
        reasons = []
        if unfinished:
            reasons.append(
                f"a save group without its last record ({unfinished} of its records present)"
            )
        if scan.problem is not None:
            where = "" if scan.stop == cut else f"at byte {scan.stop}: "
            reasons.append(f"{where}{scan.problem}")
        plan.cut = (info.path, cut)
        plan.notes.append(
            f"truncated torn tail of {info.path.name} at byte {cut} ({len(data) - cut} bytes): "
            + "; ".join(reasons)
        )
        info.size = cut
    return scan.frames[:complete]


def _replay_segment(info: SegmentInfo, frames: list[Frame], state: LogState | None) -> LogState:
    """Apply one segment's records to ``state`` (None: this is the oldest segment left)."""
    path = str(info.path)
    first = _decode(info, frames[0])
    start = first[0]
    if len(first) != 1 or not isinstance(start, SegmentStart):
        raise StorageCorrupt(path, 0, "segment does not begin with a SEGMENT_START record")
    if start.seq != info.seq:
        raise StorageCorrupt(path, 0, f"segment header says it is segment {start.seq}")
    if state is None:
        state = LogState.from_segment_start(start)
    elif start != state.segment_start(info.seq):
        raise StorageCorrupt(
            path,
            0,
            f"segment header {start} disagrees with what the segments before it left: "
            f"{state.segment_start(info.seq)}",
        )
    for frame in frames[1:]:
        records = _decode(info, frame)
        if any(isinstance(record, SegmentStart) for record in records):
            raise StorageCorrupt(path, frame.offset, "SEGMENT_START record inside a segment")
        try:
            state.apply_all(records)
        except ValueError as exc:
            raise StorageCorrupt(path, frame.offset, f"{frame.kind.name} record: {exc}") from None
        last = records[-1]
        if isinstance(last, Entry):  # an ENTRIES frame's last entry has its highest index
            info.max_entry_index = max(info.max_entry_index, last.index)
    return state


def _decode(info: SegmentInfo, frame: Frame) -> list[Record]:
    try:
        return decode_records(frame)
    except ValueError as exc:
        raise StorageCorrupt(
            str(info.path), frame.offset, f"{frame.kind.name} record does not decode: {exc}"
        ) from None


def _check_covered(state: LogState, oldest: SegmentInfo) -> None:
    """Every index past the snapshot, up to the last, must be held by an entry. One that is
    not was in a segment that went missing (compaction deletes only what the snapshot
    covers), and a gap inside the log is refused as it is replayed."""
    if state.last_index <= state.snapshot_index:
        return
    first_needed = state.snapshot_index + 1
    if not state.entries or state.entries[0].index > first_needed:
        first_held = state.entries[0].index if state.entries else state.last_index + 1
        raise StorageCorrupt(
            str(oldest.path),
            0,
            f"entries {first_needed} to {first_held - 1} are in no segment and no snapshot "
            f"(snapshot at {state.snapshot_index}): a segment before this one is missing",
        )


def _choose_snapshot(
    directory: Path, recovery: Recovery, snapshots: dict[tuple[int, int], Path], plan: _Plan
) -> None:
    """Load the snapshot the WAL says is in force; plan to delete every other one."""
    state = recovery.state
    in_force = (state.snapshot_index, state.snapshot_term)
    if state.snapshot_index > 0:
        path = snapshots.get(in_force)
        if path is None:
            missing = directory / snapshot_name(*in_force)
            raise StorageCorrupt(
                str(missing), None, "the WAL puts this snapshot in force, but it is missing"
            )
        recovery.snapshot = read_snapshot(path)
        recovery.snapshot_path = path
    for key, path in sorted(snapshots.items()):
        if key == in_force:
            continue
        plan.delete.append(path)
        why = (
            "newer than the one in force: the save that wrote it did not complete"
            if key[0] > state.snapshot_index
            else "superseded"
        )
        plan.notes.append(f"removed {path.name}: {why}")


def _repair(directory: Path, plan: _Plan, *, fsync: bool) -> None:
    if plan.cut is not None:
        truncate(*plan.cut, fsync=fsync)
    for path in plan.delete:
        os.unlink(path)
    if plan.delete:
        sync_directory(directory, fsync=fsync)
