"""Choosing a pool member and a source IP: smooth weighted round robin, deterministic.

PowerMTA does not document how a ``<virtual-mta-pool>`` picks its member (powermta.md §6, a
gap). Sluice's rule is nginx's *smooth weighted round robin*: every member has a weight
(default 1) and a running score. On each pick every eligible member's score grows by its
weight, the member with the highest score wins (ties: the one listed first), and the winner's
score drops by the sum of the eligible weights. Over any window of ``sum(weights)`` picks each
member is chosen exactly ``weight`` times, and picks of one member are spread out rather than
bunched (weights 5,1,1 give a a b a c a a, not a a a a a b c). With all weights 1 it is plain
round robin, which is how a virtual MTA with several ``smtp-source-host`` lines rotates its
source IPs.

Public names: SmoothRoundRobin, PoolMember, SourceHost, PoolChooser, SourceChooser.
Constructors raise RoutingConfigError for an empty member list or a weight below 1.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sluice.routing.errors import RoutingConfigError

__all__ = ["PoolChooser", "PoolMember", "SmoothRoundRobin", "SourceChooser", "SourceHost"]

T = TypeVar("T")


class SmoothRoundRobin(Generic[T]):
    """nginx's smooth weighted round robin over ``(item, weight)`` pairs."""

    __slots__ = ("_current", "_items", "_weights")

    def __init__(self, members: Sequence[tuple[T, int]]) -> None:
        if not members:
            raise RoutingConfigError("a round robin needs at least one member")
        for item, weight in members:
            if weight < 1:
                raise RoutingConfigError(f"weight of {item!r} must be at least 1, not {weight}")
        self._items = [item for item, _ in members]
        self._weights = [weight for _, weight in members]
        self._current = [0] * len(members)

    @property
    def items(self) -> tuple[T, ...]:
        return tuple(self._items)

    def pick(self, skip: Container[T] = ()) -> T | None:
        """The next member, leaving out those in ``skip`` (e.g. paused); None if none is left."""
        best = -1
        total = 0
        for i, item in enumerate(self._items):
            if item in skip:
                continue
            self._current[i] += self._weights[i]
            total += self._weights[i]
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        if best < 0:
            return None
        self._current[best] -= total
        return self._items[best]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolMember:
    """A ``virtual-mta NAME`` line of a pool, with its weight (Sluice extension, default 1)."""

    vmta: str
    weight: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceHost:
    """An ``smtp-source-host IP HOSTNAME`` line: bind to ``address``, EHLO as ``hostname``."""

    address: str
    hostname: str


class PoolChooser:
    """Picks the virtual MTA of a pool for each message, by smooth weighted round robin."""

    __slots__ = ("_rr", "name")

    def __init__(self, name: str, members: Sequence[PoolMember]) -> None:
        self.name = name
        self._rr = SmoothRoundRobin([(m.vmta, m.weight) for m in members])

    def choose(self, skip: Container[str] = ()) -> str | None:
        """The member for the next message; None if every member is in ``skip``."""
        return self._rr.pick(skip)


class SourceChooser:
    """Rotates over a virtual MTA's source hosts, one per new connection (round robin)."""

    __slots__ = ("_rr",)

    def __init__(self, sources: Sequence[SourceHost]) -> None:
        self._rr = SmoothRoundRobin([(s, 1) for s in sources])

    @property
    def sources(self) -> tuple[SourceHost, ...]:
        return self._rr.items

    def choose(self, skip: Container[SourceHost] = ()) -> SourceHost | None:
        """The source for the next connection; None if every source is in ``skip``."""
        return self._rr.pick(skip)
