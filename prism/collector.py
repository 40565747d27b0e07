"""The garbage collector's thresholds for Prism's long loops: the simulator and the nodes.

Both allocate objects by the million that die young (events, messages, entries on their
way to disk, replies) while holding many that live long (member tables, the log past the
last snapshot). At CPython's default thresholds (700, 10, 10) a collection runs every few
hundred allocations and now and then walks every live object:

* the first 12 simulated seconds of a 1,000-member SWIM cold start ran 8,200 collections,
  17 of them over every live object: 5.3-5.7 s of 29-32 s (1.6 s with these thresholds);
* a Raft leader taking 25,000 writes a second ran 110 collections a second, 6% of its CPU
  (none with these thresholds), and each one held up every write in flight.

Collections still happen (reference cycles are still freed), only less often.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GC_THRESHOLD = (50_000, 20, 100)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's thresholds to at least ``GC_THRESHOLD``, restoring them after."""
    old = gc.get_threshold()
    gc.set_threshold(*(max(o, n) for o, n in zip(old, GC_THRESHOLD, strict=True)))
    try:
        yield
    finally:
        gc.set_threshold(*old)
