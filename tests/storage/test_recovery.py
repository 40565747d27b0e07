"""Recovery on open: what a crash can leave is repaired and noted; anything else is refused.

A crash can only leave the end of the last segment incomplete (a torn write): that tail is
cut off, with the whole save group it belonged to. Damage with valid records after it, a
missing segment, a log that does not continue or a bad snapshot file is ``StorageCorrupt``,
naming the file and byte offset, and the directory is left as it was.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism.errors import StorageCorrupt
from prism.raft.disk import DiskStorage
from prism.raft.disk.records import (
    HEADER,
    Frame,
    RecordType,
    decode_records,
    encode_group,
    read_frame,
)
from prism.raft.disk.snapshots import write_snapshot
from prism.raft.messages import Entry, EntryKind
from prism.raft.ready import HardState
from tests.storage.helpers import (
    State,
    entries,
    entry,
    flip,
    indexes,
    segment_files,
    snapshot,
    snapshot_files,
    state_of,
)


@dataclass(frozen=True)
class Point:
    """The directory right after one write: the last segment's name and size, the state."""

    segment: str
    size: int
    state: State


def write_history(directory: Path, *, segment_bytes: int) -> list[Point]:
    """A few saves of different shapes (a multi-record group, a one-entry group, entries
    with hard state, hard state alone), recording where each one ends."""
    points: list[Point] = []
    with DiskStorage.open(directory, segment_bytes=segment_bytes) as storage:

        def mark() -> None:
            last = segment_files(directory)[-1]
            points.append(Point(last.name, last.stat().st_size, state_of(storage)))

        mark()
        storage.save(HardState(term=1), entries(1, 5))
        mark()
        storage.save(None, [entry(6)])
        mark()
        storage.save(HardState(term=2, commit=6), [entry(7, 2), entry(8, 2)])
        mark()
        storage.save(HardState(term=2, vote="n1", commit=8), [])
        mark()
    return points


def frames_of(path: Path) -> list[Frame]:
    data = memoryview(path.read_bytes())
    frames: list[Frame] = []
    offset = 0
    while offset < len(data):
        frame = read_frame(data, offset)
        assert isinstance(frame, Frame)
        frames.append(frame)
        offset = frame.end
    return frames


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def restore(directory: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(directory)
    directory.mkdir()
    for name, data in files.items():
        (directory / name).write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("segment_bytes", [1 << 20, 150], ids=["one-segment", "rotating"])
def test_torn_tail_is_cut_at_every_byte_of_the_last_writes(
    tmp_path: Path, segment_bytes: int
) -> None:
    """Cut the last segment at every offset: open succeeds, the log is what the complete
    saves left (a prefix of what was written), and the file ends after the last of them."""
    directory = tmp_path / "raft"
    points = write_history(directory, segment_bytes=segment_bytes)
    original = files_of(directory)
    last = segment_files(directory)[-1]
    data = original[last.name]
    in_last = [point for point in points if point.segment == last.name]
    before_last = [point for point in points if point.segment != last.name]
    header_end = frames_of(last)[0].end
    written = indexes(points[-1].state[2])
    for cut in range(len(data)):
        restore(directory, original)
        last.write_bytes(data[:cut])
        complete = [point for point in in_last if point.size <= cut]
        # Nothing complete left in the last segment: the state the segments before it
        # left, or (a lone segment) the empty state its header was written with.
        start = before_last[-1] if before_last else points[0]
        expected = complete[-1] if complete else start
        # fsync=False: a thousand opens, and durability is not what this test is about.
        with DiskStorage.open(directory, fsync=False, segment_bytes=segment_bytes) as storage:
            assert state_of(storage) == expected.state, f"cut at {cut}"
            assert indexes(storage.entries) == written[: len(storage.entries)]
            kept = expected.size if complete else header_end
            assert last.read_bytes() == data[:kept], f"cut at {cut}"
            assert bool(storage.recovery_notes) == (cut != kept), storage.recovery_notes
            if cut != kept and cut > 0:
                assert f"truncated torn tail of {last.name} at byte" in storage.recovery_notes[0]
            storage.save(None, [entry(storage.last_index + 1, 3)])
            after = state_of(storage)
        with DiskStorage.open(directory, fsync=False, segment_bytes=segment_bytes) as storage:
            assert state_of(storage) == after
            assert storage.recovery_notes == []


def test_torn_tail_note_names_file_offset_and_length(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    points = write_history(directory, segment_bytes=1 << 20)
    last = segment_files(directory)[-1]
    with last.open("r+b") as file:
        file.truncate(points[-1].size - 3)
    with DiskStorage.open(directory) as storage:
        cut = points[-2].size
        torn = points[-1].size - 3 - cut
        assert storage.recovery_notes == [
            f"truncated torn tail of {last.name} at byte {cut} ({torn} bytes): incomplete "
            f"record: header promises {torn + 3 - 10} payload bytes, {torn - 10} present"
        ]


def test_save_group_without_its_last_record_is_dropped_whole(tmp_path: Path) -> None:
    """A save is all or nothing: here its last record (the hard state) is torn off, so the
    five entries before it, complete on disk, are dropped too."""
    directory = tmp_path / "raft"
    with DiskStorage.open(directory) as storage:
        storage.save(HardState(term=1), entries(1, 2))
        before = state_of(storage)
        storage.save(HardState(term=2, commit=2), entries(3, 7, term=2))
    last = segment_files(directory)[-1]
    hard_state_record = frames_of(last)[-1]
    with last.open("r+b") as file:
        file.truncate(hard_state_record.offset + 4)
    with DiskStorage.open(directory) as storage:
        assert state_of(storage) == before
        assert (
            "a save group without its last record (1 of its records present)"
            in (storage.recovery_notes[0])
        )


def single_entry_log(directory: Path, count: int) -> list[Frame]:
    """A log of one-record saves, so every record is a group; returns the frames."""
    with DiskStorage.open(directory) as storage:
        for index in range(1, count + 1):
            storage.save(None, [entry(index)])
    return frames_of(segment_files(directory)[-1])


@pytest.mark.slow
def test_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    frames = single_entry_log(directory, 6)
    path = segment_files(directory)[-1]
    original = path.read_bytes()
    last = frames[-1]

    @settings(max_examples=40, deadline=None)
    @given(st.integers(last.offset, last.end - 1), st.integers(1, 255))
    def check(offset: int, mask: int) -> None:
        path.write_bytes(original)
        flip(path, offset, mask)
        with DiskStorage.open(directory) as storage:
            assert indexes(storage.entries) == [1, 2, 3, 4, 5]
            assert path.read_bytes() == original[: last.offset]
            assert storage.recovery_notes[0].startswith(
                f"truncated torn tail of {path.name} at byte {last.offset} "
                f"({last.end - last.offset} bytes)"
            )

    check()


@pytest.mark.slow
def test_flipped_byte_before_valid_records_is_corruption(tmp_path: Path) -> None:
    """Damage with valid records after it is not a torn write: refuse, name file and offset,
    and leave the directory untouched."""
    directory = tmp_path / "raft"
    frames = single_entry_log(directory, 6)
    path = segment_files(directory)[-1]
    original = path.read_bytes()

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(frames[:-1]), st.data(), st.integers(1, 255))
    def check(frame: Frame, data: st.DataObject, mask: int) -> None:
        path.write_bytes(original)
        flip(path, data.draw(st.integers(frame.offset, frame.end - 1)), mask)
        damaged = path.read_bytes()
        with pytest.raises(StorageCorrupt) as caught:
            DiskStorage.open(directory)
        assert caught.value.path == str(path)
        assert caught.value.offset == frame.offset
        assert f"{path} at byte {frame.offset}: " in str(caught.value)
        assert "a valid record follows" in str(caught.value)
        assert path.read_bytes() == damaged

    check()


def rotated_log(directory: Path) -> list[Path]:
    with DiskStorage.open(directory, segment_bytes=100) as storage:
        for index in range(1, 13):
            storage.save(HardState(term=1, commit=index - 1), [entry(index)])
    segments = segment_files(directory)
    assert len(segments) >= 4
    return segments


def test_damage_at_the_end_of_a_segment_that_is_not_the_last_is_corruption(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "raft"
    segments = rotated_log(directory)
    middle = segments[1]
    last_record = frames_of(middle)[-1]
    flip(middle, last_record.end - 1)
    with pytest.raises(StorageCorrupt, match="in a segment that is not the last") as caught:
        DiskStorage.open(directory)
    assert caught.value.path == str(middle)
    assert caught.value.offset == last_record.offset


def test_torn_segment_that_is_not_the_last_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    middle = rotated_log(directory)[1]
    size = middle.stat().st_size
    with middle.open("r+b") as file:
        file.truncate(size - 1)
    with pytest.raises(StorageCorrupt, match="incomplete record") as caught:
        DiskStorage.open(directory)
    assert caught.value.path == str(middle)


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    segments = rotated_log(directory)
    segments[2].unlink()
    with pytest.raises(StorageCorrupt, match="segment missing") as caught:
        DiskStorage.open(directory)
    assert caught.value.path == str(segments[2])
    assert segments[1].name in str(caught.value)
    assert segments[3].name in str(caught.value)


def test_missing_first_segment_is_corruption_when_the_snapshot_does_not_cover_it(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "raft"
    segments = rotated_log(directory)
    segments[0].unlink()
    with pytest.raises(StorageCorrupt, match="a segment before this one is missing") as caught:
        DiskStorage.open(directory)
    assert caught.value.path == str(segments[1])


def test_segment_in_the_wrong_place_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    segments = rotated_log(directory)
    shutil.copyfile(segments[2], segments[1])
    with pytest.raises(StorageCorrupt, match="segment header says it is segment 3") as caught:
        DiskStorage.open(directory)
    assert caught.value.path == str(segments[1])
    assert caught.value.offset == 0


def test_entry_that_does_not_continue_the_log_is_corruption(tmp_path: Path) -> None:
    """A well-formed record that breaks the log's rules is refused, not skipped."""
    directory = tmp_path / "raft"
    single_entry_log(directory, 3)
    path = segment_files(directory)[-1]
    offset = path.stat().st_size
    with path.open("ab") as file:
        file.write(encode_group([entry(9)]))
    with pytest.raises(StorageCorrupt, match="gap: storage ends at 3, got 9") as caught:
        DiskStorage.open(directory)
    assert (caught.value.path, caught.value.offset) == (str(path), offset)


def framed_by_hand(kind: RecordType, body: object, *, last: bool = True) -> bytes:
    """A frame as the module docstring lays it out, built without ``encode_group``."""
    payload = msgpack.packb(body, use_bin_type=True)
    flags = 1 if last else 0
    head = struct.pack("<I", len(payload)) + bytes((kind, flags))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return HEADER.pack(len(payload), crc, kind, flags) + payload


def entry_body(item: Entry) -> list[object]:
    return [item.term, item.index, int(item.kind), item.data, item.client_id, item.seq]


def test_record_that_does_not_decode_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    single_entry_log(directory, 2)
    path = segment_files(directory)[-1]
    offset = path.stat().st_size
    with path.open("ab") as file:  # a HARD_STATE has three fields
        file.write(framed_by_hand(RecordType.HARD_STATE, [1, 2]))
    with pytest.raises(StorageCorrupt, match="HARD_STATE record does not decode") as caught:
        DiskStorage.open(directory)
    assert caught.value.offset == offset


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "holds no entry"),
        ([[1, 3, 0, b"", "", 0], 7], "holds int, not an entry"),
        ([[1, 3, 0, b"", "", 0], [1, 5, 0, b"", "", 0]], "entry 5 where 4 should follow"),
        ([[1, 3, 0, b"", "", 0], [1, 3, 0, b"", "", 0]], "entry 3 where 4 should follow"),
        ([[1, 3, 0, "not bin", "", 0]], "entry data must be bin"),
    ],
)
def test_entries_record_that_does_not_decode_is_corruption(
    tmp_path: Path, body: list[object], why: str
) -> None:
    """An ENTRIES record with a checksum that matches is refused whole for one bad entry,
    and for entries that do not run consecutively: none of it is applied."""
    directory = tmp_path / "raft"
    single_entry_log(directory, 2)
    path = segment_files(directory)[-1]
    offset = path.stat().st_size
    with path.open("ab") as file:
        file.write(framed_by_hand(RecordType.ENTRIES, body))
    with pytest.raises(StorageCorrupt, match=f"ENTRIES record does not decode: .*{why}") as caught:
        DiskStorage.open(directory)
    assert caught.value.offset == offset


def test_entry_records_of_earlier_writers_are_read(tmp_path: Path) -> None:
    """Segments written before ENTRIES existed hold one ENTRY record per entry: they are
    read as before, and the log continues after them in ENTRIES records."""
    directory = tmp_path / "raft"
    single_entry_log(directory, 2)
    path = segment_files(directory)[-1]
    with path.open("ab") as file:
        file.write(framed_by_hand(RecordType.ENTRY, entry_body(entry(3)), last=False))
        file.write(framed_by_hand(RecordType.ENTRY, entry_body(entry(4))))
    with DiskStorage.open(directory) as storage:
        assert indexes(storage.entries) == [1, 2, 3, 4]
        assert storage.recovery_notes == []
        storage.save(None, [entry(5)])
    with DiskStorage.open(directory) as storage:
        assert list(storage.entries) == [entry(index) for index in range(1, 6)]


@given(
    st.lists(
        st.builds(
            lambda term, kind, data, client_id, seq: (term, kind, data, client_id, seq),
            st.integers(0, 2**63 - 1),
            st.sampled_from(list(EntryKind)),
            st.binary(max_size=300),
            st.text(max_size=20),
            st.integers(0, 2**63 - 1),
        ),
        max_size=5,
    ),
    st.none() | st.builds(HardState, st.integers(0, 9), st.none() | st.text(max_size=5)),
)
def test_entry_and_hard_state_frames_are_laid_out_as_the_format_says(
    fields: list[tuple[int, EntryKind, bytes, str, int]], hard_state: HardState | None
) -> None:
    """A save group's entries are one ENTRIES frame, then the hard state has its own: the
    bytes are what the module docstring lays out (length, CRC over the rest, type, flags;
    the last of a group flagged), and read back as the same records."""
    group: list[Entry | HardState] = [
        Entry(term=term, index=i, kind=kind, data=data, client_id=client_id, seq=seq)
        for i, (term, kind, data, client_id, seq) in enumerate(fields, start=1)
    ]
    if hard_state is not None:
        group.append(hard_state)
    if not group:
        return
    entry_run = [entry_body(item) for item in group if isinstance(item, Entry)]
    expected = b""
    if entry_run:
        expected += framed_by_hand(RecordType.ENTRIES, entry_run, last=hard_state is None)
    if hard_state is not None:
        body = [hard_state.term, hard_state.vote, hard_state.commit]
        expected += framed_by_hand(RecordType.HARD_STATE, body)
    data = encode_group(list(group))
    assert data == expected
    view, offset, decoded = memoryview(data), 0, []
    while offset < len(data):
        frame = read_frame(view, offset)
        assert isinstance(frame, Frame)
        decoded.extend(decode_records(frame))
        offset = frame.end
    assert decoded == group


def snapshotted_log(directory: Path) -> Path:
    with DiskStorage.open(directory) as storage:
        storage.save(HardState(term=1, commit=10), entries(1, 10))
        storage.save_snapshot(snapshot(8, data=b"the state machine"))
    (path,) = snapshot_files(directory)
    return path


@pytest.mark.slow
def test_damaged_snapshot_file_is_corruption(tmp_path: Path) -> None:
    """Every byte of a snapshot file is covered: flip any one and open refuses it."""
    directory = tmp_path / "raft"
    path = snapshotted_log(directory)
    original = path.read_bytes()

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, len(original) - 1), st.integers(1, 255))
    def check(offset: int, mask: int) -> None:
        path.write_bytes(original)
        flip(path, offset, mask)
        with pytest.raises(StorageCorrupt, match="snapshot file") as caught:
            DiskStorage.open(directory)
        assert caught.value.path == str(path)
        assert caught.value.offset is not None

    check()


def test_truncated_snapshot_file_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    path = snapshotted_log(directory)
    original = path.read_bytes()
    for size in (0, 10, 43, len(original) - 1):
        path.write_bytes(original[:size])
        with pytest.raises(StorageCorrupt, match="snapshot file") as caught:
            DiskStorage.open(directory)
        assert caught.value.path == str(path)


def test_missing_snapshot_file_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    path = snapshotted_log(directory)
    path.unlink()
    with pytest.raises(StorageCorrupt, match="in force, but it is missing") as caught:
        DiskStorage.open(directory)
    assert caught.value.path == str(path)


def test_snapshot_file_without_its_record_is_removed(tmp_path: Path) -> None:
    """A crash after the snapshot file but before its WAL record: the save is lost whole."""
    directory = tmp_path / "raft"
    snapshotted_log(directory)
    stray = write_snapshot(directory, snapshot(10), fsync=False)
    (directory / "snapshot-00000000000000000011-00000000000000000001.snap.tmp").write_bytes(b"x")
    with DiskStorage.open(directory) as storage:
        assert storage.snapshot == snapshot(8, data=b"the state machine")
        assert not stray.exists()
        assert storage.recovery_notes == [
            "removed snapshot-00000000000000000011-00000000000000000001.snap.tmp, left by an "
            "interrupted snapshot write",
            f"removed {stray.name}: newer than the one in force: the save that wrote it did "
            "not complete",
        ]
    assert len(snapshot_files(directory)) == 1


def test_only_the_newest_snapshot_file_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    with DiskStorage.open(directory) as storage:
        storage.save(HardState(term=1, commit=10), entries(1, 10))
        for index in (3, 6, 9):
            storage.save_snapshot(snapshot(index))
            assert [p.name for p in snapshot_files(directory)] == [
                f"snapshot-{index:020d}-{1:020d}.snap"
            ]
        storage.save(HardState(term=2), [], snapshot(12, term=2))
        assert len(snapshot_files(directory)) == 1


def test_empty_last_segment_gets_its_header(tmp_path: Path) -> None:
    """A crash right after a new segment was created, before its first write."""
    directory = tmp_path / "raft"
    segments = rotated_log(directory)
    with DiskStorage.open(directory) as storage:
        before = state_of(storage)
    empty = directory / f"wal-{int(segments[-1].name[4:20]) + 1:016d}.log"
    empty.touch()
    with DiskStorage.open(directory) as storage:
        assert state_of(storage) == before
        storage.save(None, [entry(13)])
        after = state_of(storage)
    with DiskStorage.open(directory) as storage:
        assert state_of(storage) == after
        assert storage.recovery_notes == []


def test_unrelated_files_are_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "raft"
    directory.mkdir()
    (directory / "LOCK").write_bytes(b"")
    (directory / "notes.tmp").write_bytes(b"")
    with DiskStorage.open(directory) as storage:
        storage.save(HardState(term=1), entries(1, 2))
    with DiskStorage.open(directory) as storage:
        assert indexes(storage.entries) == [1, 2]
    assert (directory / "LOCK").exists()
    assert (directory / "notes.tmp").exists()
