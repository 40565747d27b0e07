"""``NodeMeta``: the structured metadata a Prism member gossips (role, API address, tags).

The core carries metadata as opaque bytes of at most 512 (``SwimConfig.max_metadata_bytes``);
this module gives those bytes a shape without pulling the wire codec into the core. The
format is deliberately tiny and versioned::

    version (1 byte, = 1)
    role, api_address, then for each tag: key, value   (each a u16 big-endian length + UTF-8)
    tag count (1 byte) comes right after api_address

``decode`` never raises: bytes from a peer that are not valid metadata give ``None``, and
the caller counts them, as with every other bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prism.swim.messages import MAX_META_BYTES

_VERSION: Final = 1
_MAX_TAGS: Final = 255


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMeta:
    """What a member tells others about itself. ``tags`` are sorted (key, value) pairs, so
    that equal metadata always encodes to equal bytes (an update is sent only on change)."""

    role: str = ""
    api_address: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if type(self.role) is not str or type(self.api_address) is not str:
            raise ValueError("role and api_address must be str")
        if type(self.tags) is not tuple or len(self.tags) > _MAX_TAGS:
            raise ValueError(f"tags must be a tuple of at most {_MAX_TAGS} pairs")
        for pair in self.tags:
            if (
                type(pair) is not tuple
                or len(pair) != 2
                or type(pair[0]) is not str
                or type(pair[1]) is not str
            ):
                raise ValueError("each tag must be a (str, str) pair")
        keys = [key for key, _ in self.tags]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise ValueError("tag keys must be unique and sorted")
        if len(self.encode()) > MAX_META_BYTES:
            raise ValueError(f"metadata encodes to more than {MAX_META_BYTES} bytes")

    @classmethod
    def of(cls, *, role: str = "", api_address: str = "", **tags: str) -> NodeMeta:
        return cls(role=role, api_address=api_address, tags=tuple(sorted(tags.items())))

    def encode(self) -> bytes:
        out = bytearray([_VERSION])
        _put(out, self.role)
        _put(out, self.api_address)
        out.append(len(self.tags))
        for key, value in self.tags:
            _put(out, key)
            _put(out, value)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> NodeMeta | None:
        """The metadata in ``data``, or None if it is not valid ``NodeMeta`` bytes."""
        if type(data) is not bytes or len(data) > MAX_META_BYTES or not data:
            return None
        if data[0] != _VERSION:
            return None
        reader = _Reader(data, 1)
        role = reader.text()
        api = reader.text()
        count = reader.byte()
        tags = []
        for _ in range(count if count is not None else 0):
            key, value = reader.text(), reader.text()
            if key is None or value is None:
                return None
            tags.append((key, value))
        if role is None or api is None or count is None or reader.offset != len(data):
            return None
        try:
            return cls(role=role, api_address=api, tags=tuple(tags))
        except ValueError:
            return None


def _put(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("a metadata string is longer than 65535 bytes")
    out += len(raw).to_bytes(2, "big")
    out += raw


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def byte(self) -> int | None:
        if self.offset >= len(self.data):
            return None
        value = self.data[self.offset]
        self.offset += 1
        return value

    def text(self) -> str | None:
        if self.offset + 2 > len(self.data):
            return None
        size = int.from_bytes(self.data[self.offset : self.offset + 2], "big")
        start = self.offset + 2
        if start + size > len(self.data):
            return None
        self.offset = start + size
        try:
            return self.data[start : self.offset].decode("utf-8")
        except UnicodeDecodeError:
            return None
