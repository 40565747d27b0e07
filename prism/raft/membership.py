"""Who is in a Raft cluster: voters, non-voting learners, and where to reach them.

A ``Membership`` is what a configuration entry of the log (``EntryKind.CONFIG``) and a
snapshot carry. A server uses the latest membership in its log, committed or not (thesis
§4.1): that is what lets a change take effect without joint consensus, provided changes go
one server at a time and a new one starts only after the previous one committed.

Addresses are opaque strings to the core (``host:port`` for the driver, empty in the
simulator); they travel with the membership so that any future leader can reach a server
that another leader added.
"""

from __future__ import annotations

from dataclasses import dataclass

from prism.raft.jsonbody import dump_object, load_object


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """Voters and learners (disjoint, sorted) and each one's address."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()  # (server id, address), sorted by id

    def __post_init__(self) -> None:
        for name, ids in (("voters", self.voters), ("learners", self.learners)):
            if type(ids) is not tuple or not all(type(i) is str and i for i in ids):
                raise ValueError(f"{name} must be a tuple of non-empty str")
            if ids != tuple(sorted(set(ids))):
                raise ValueError(f"{name} must be sorted and without duplicates")
        if set(self.voters) & set(self.learners):
            raise ValueError("a server cannot be both voter and learner")
        pairs: object = self.addresses
        if type(pairs) is not tuple:
            raise ValueError("addresses must be a tuple of (id, address) pairs")
        address_ids = [pair[0] for pair in self.addresses]
        if address_ids != sorted(set(address_ids)):
            raise ValueError("addresses must be sorted by id and without duplicates")
        members = set(self.voters) | set(self.learners)
        for pair in self.addresses:
            if len(pair) != 2 or not all(type(part) is str for part in pair):
                raise ValueError("an address is an (id, address) pair of str")
            if pair[0] not in members:
                raise ValueError(f"address given for {pair[0]}, which is not a member")

    @classmethod
    def of(
        cls,
        voters: tuple[str, ...] | list[str],
        learners: tuple[str, ...] | list[str] = (),
        addresses: dict[str, str] | None = None,
    ) -> Membership:
        """Build from unsorted collections."""
        return cls(
            voters=tuple(sorted(voters)),
            learners=tuple(sorted(learners)),
            addresses=tuple(sorted((addresses or {}).items())),
        )

    @property
    def members(self) -> tuple[str, ...]:
        """Voters and learners, sorted."""
        return tuple(sorted(self.voters + self.learners))

    def address_of(self, server: str) -> str:
        for server_id, address in self.addresses:
            if server_id == server:
                return address
        return ""

    def address_map(self) -> dict[str, str]:
        return dict(self.addresses)

    def encode(self) -> bytes:
        """The payload of a CONFIG entry or a snapshot's membership (JSON: the core may not
        depend on msgpack)."""
        body = {
            "voters": list(self.voters),
            "learners": list(self.learners),
            "addresses": dict(self.addresses),
        }
        return dump_object(body)

    @classmethod
    def decode(cls, data: bytes) -> Membership:
        """Parse ``encode``'s output; raises ValueError on anything malformed."""
        body = load_object(data, "membership")
        voters, learners = body.get("voters"), body.get("learners", [])
        addresses = body.get("addresses", {})
        if not isinstance(voters, list) or not isinstance(learners, list):
            raise ValueError("voters and learners must be lists")
        if not isinstance(addresses, dict):
            raise ValueError("addresses must be an object")
        return cls(
            voters=tuple(voters),
            learners=tuple(learners),
            addresses=tuple(sorted(addresses.items())),
        )
