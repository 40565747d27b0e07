"""``NodeMeta``: structured member metadata within the 512-byte limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.swim.meta import NodeMeta

short = st.text(max_size=20)


@given(role=short, api=short, tags=st.dictionaries(short, short, max_size=8))
def test_node_meta_round_trips(role: str, api: str, tags: dict[str, str]) -> None:
    meta = NodeMeta(role=role, api_address=api, tags=tuple(sorted(tags.items())))
    assert NodeMeta.decode(meta.encode()) == meta


@given(st.binary(max_size=600))
def test_node_meta_decode_never_raises(data: bytes) -> None:
    meta = NodeMeta.decode(data)
    if meta is not None:
        assert meta.encode() == data


def test_node_meta_is_limited_to_512_bytes() -> None:
    NodeMeta.of(role="worker", api_address="10.0.0.4:8008", zone="eu-1", gpu="a100")
    with pytest.raises(ValueError, match="512"):
        NodeMeta(role="x" * 600)
    with pytest.raises(ValueError, match="sorted"):
        NodeMeta(tags=(("b", ""), ("a", "")))
