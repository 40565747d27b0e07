"""Crash-safe disk storage for Raft: ``DiskStorage``, the ``Storage`` contract in a directory.

Blocking file I/O, no trio: a driver calls it from a worker thread
(``trio.to_thread.run_sync(storage.save, ...)``). A single writer is assumed: one thread at
a time calls a ``DiskStorage``, and one ``DiskStorage`` at a time owns its directory
(nothing here locks it; the node's data directory lock is the place for that).

The directory
-------------
::

    wal-0000000000000007.log     WAL segments, numbered from 1 with no gaps (segments.py)
    wal-0000000000000008.log     the newest one is appended to
    snapshot-<index>-<term>.snap the snapshot in force, if any (snapshots.py)

Segment files hold framed, checksummed records (byte layout in ``records.py``): log entries
(one record each), hard states, ``SNAPSHOT`` records saying which snapshot file is in force
and what it did to the log, ``COMPACT`` records, and, first in every segment, a
``SEGMENT_START`` restating the hard state, the snapshot in force and the last index.
Snapshot files are written atomically (temp file, fsync, rename, directory fsync) and carry
a CRC over all their bytes (layout in ``snapshots.py``).

Where the hard state lives
--------------------------
In the WAL, as records, not in a file of its own: then a ``save`` of entries and hard state
is one write and one fsync, where a separate file would cost three (file, rename, directory).
Compaction never loses it, because every segment starts by restating it.

What each write does
--------------------
A write is one *save group* of records, appended with one ``write`` and one fsync, and
applied to the in-memory image only after that returns; the group is all or nothing across
a crash (a partial group is cut off by recovery). Each is durable when it returns.

* ``save(hard_state, entries, snapshot)``: a snapshot newer than the one in force is first
  written to its own file (durably); then the group ``[SNAPSHOT, entries..., HARD_STATE]``
  (each part present only if given). A save with nothing new writes nothing. When the
  current segment has reached ``segment_bytes``, the group goes to a new segment instead,
  after its ``SEGMENT_START``, and the directory is fsynced once more for the new name.
* ``save_snapshot(snapshot)``: the snapshot file, then a group of one ``SNAPSHOT`` record.
* ``compact(index)``: a group of one ``COMPACT`` record (when it drops an entry), then the
  deletion of the oldest whole segments whose entries are all at or below ``index``, one at
  a time, each followed by a directory fsync (so the survivors are always a contiguous run).
  The newest segment is never deleted.

A snapshot file is in force once its ``SNAPSHOT`` record is durable, not before: a crash
between the two leaves an extra file, which recovery deletes, and the save is lost whole.
The previous snapshot file is deleted after the record is durable, so the directory keeps
only the newest.

fsync accounting (``fsync=True``): a ``save`` or ``compact`` record costs exactly one fsync
of the segment file; starting a segment adds one directory fsync; a snapshot file costs one
fsync of the file and one of the directory; deleting a segment costs one directory fsync.
``fsync=False`` skips all of them and changes nothing else.

Recovery
--------
``DiskStorage.open`` replays the segments through the same rules the writer applies
(``logstate.py``), so it rebuilds exactly what the writer held. It cuts a torn tail off the
last segment and removes leftovers of interrupted writes, listing each repair in
``recovery_notes`` (and logging it on the ``prism.raft.disk`` logger); any damage a crash
cannot explain raises ``prism.errors.StorageCorrupt`` naming the file and byte offset, and
leaves the directory untouched. The full list is in ``recovery.py``.

Differences from ``MemoryStorage``
----------------------------------
Same rules, same results, same ``ValueError`` messages, except where ``MemoryStorage`` is
loose:

* Entries at or below the snapshot's index are kept as the writer had them (a node keeps
  some behind its own snapshot for slow followers), consecutive with the rest. Where the log
  would have a gap (a snapshot taken or installed past the end of a log whose entries were
  kept, then an append after the snapshot) the entries before the gap are dropped, at write
  time and so also on replay: the snapshot covers them. ``MemoryStorage`` leaves them in
  front of the gap, which breaks its own "consecutive" promise.
* A refused ``save`` writes and changes nothing; ``MemoryStorage`` may already have
  installed the save's snapshot when it finds the entries' gap.
* ``save`` refuses entries that are not consecutive among themselves (``MemoryStorage``
  stores them), since recovery would refuse such a log.

The in-memory image holds every entry the log holds, as ``MemoryStorage`` does; memory use
is bounded by compaction, not by this package.
"""

from prism.raft.disk.storage import DiskStorage as DiskStorage

__all__ = ["DiskStorage"]
