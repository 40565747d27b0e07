"""The JSON the core reads and writes itself (KV commands, memberships): compact, sorted
keys, and one way to fail on bad bytes. The core may not depend on msgpack."""

from __future__ import annotations

import json
from typing import Any


def dump_object(body: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys, so equal objects encode to equal bytes."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def load_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object; raises ValueError naming ``what`` on anything else."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: nesting deeper than the decoder's limit (b"[" * 50_000).
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{what} must be a JSON object")
    return body
