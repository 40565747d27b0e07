"""Random streams derived from one seed by label.

Each subsystem (a link, a node's core, a client, the fault schedule) draws from its own
stream, so adding a draw in one place does not shift every other (what makes a fault
schedule shrinkable). Labels are hashed with BLAKE2b, never ``hash()``, whose value for
strings changes from one process to the next.
"""

from __future__ import annotations

import hashlib
import random


def derive(seed: int, label: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}/{label}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))
