"""What a simulator saw, per source IP: live counters, frozen snapshots, concurrency samples.

The server keeps one mutable :class:`SourceCounters` per source IP (plain increments on the
hot path) and turns them into frozen :class:`SourceStats` when a test asks (``stats()``).

Public names: SourceCounters, SourceStats, ConcurrencySample, SimEvent, Stats.
Nothing here raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["ConcurrencySample", "SimEvent", "SourceCounters", "SourceStats", "Stats"]

_EMPTY: Mapping[str, int] = MappingProxyType({})


class SourceCounters:
    """Mutable counters of one source IP (the server's hot path increments these)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connect_times",
        "connections",
        "current",
        "first_message_at",
        "hangups",
        "last_message_at",
        "message_bytes",
        "message_times",
        "messages",
        "peak",
        "recipients",
        "refused_connections",
        "replies",
        "tags",
    )

    def __init__(self) -> None:
        self.connections = 0
        self.refused_connections = 0
        self.current = 0
        self.peak = 0
        self.messages = 0
        self.recipients = 0
        self.message_bytes = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.hangups = 0
        self.replies: dict[int, int] = {}
        self.tags: dict[str, int] = {}
        self.first_message_at: float | None = None
        self.last_message_at: float | None = None
        self.message_times: list[float] | None = None
        self.connect_times: list[float] | None = None

    def snapshot(self) -> SourceStats:
        return SourceStats(
            connections=self.connections,
            refused_connections=self.refused_connections,
            current=self.current,
            peak=self.peak,
            messages=self.messages,
            recipients=self.recipients,
            message_bytes=self.message_bytes,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            hangups=self.hangups,
            replies=MappingProxyType(dict(self.replies)),
            tags=MappingProxyType(dict(self.tags)),
            first_message_at=self.first_message_at,
            last_message_at=self.last_message_at,
            message_times=tuple(self.message_times or ()),
            connect_times=tuple(self.connect_times or ()),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceStats:
    """One source IP's totals (or the sum over all sources) at snapshot time."""

    #: TCP connections opened (including refused ones).
    connections: int = 0
    #: Connections refused before being served (421 greeting, 4.3.2 at EHLO).
    refused_connections: int = 0
    #: Open now / the most open at once (a session counts until it is answered 221 or closed).
    current: int = 0
    peak: int = 0
    #: Messages accepted (250 after the final dot) and their recipients and sizes.
    messages: int = 0
    recipients: int = 0
    message_bytes: int = 0
    #: Octets received and sent on the wire.
    bytes_in: int = 0
    bytes_out: int = 0
    #: Connections closed after the final dot without a reply (fault knobs).
    hangups: int = 0
    #: Replies sent, by code (greetings, 250s, 354s, refusals ...).
    replies: Mapping[int, int] = field(default_factory=lambda: _EMPTY_CODES)
    #: Refusals by tag: "RP-001", "4.3.2", "4.7.500", "S3150", "4.7.28", "TSS04", "t550" ...
    tags: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    #: Server clock times of the first and last accepted message.
    first_message_at: float | None = None
    last_message_at: float | None = None
    #: Acceptance times of every message (only with ``timeline=True``).
    message_times: tuple[float, ...] = ()
    #: Times every connection was accepted (only with ``timeline=True``).
    connect_times: tuple[float, ...] = ()

    def code(self, code: int) -> int:
        """Replies sent with ``code``."""
        return self.replies.get(code, 0)

    def tag(self, tag: str) -> int:
        """Refusals counted under ``tag``."""
        return self.tags.get(tag, 0)


_EMPTY_CODES: Mapping[int, int] = MappingProxyType({})


def _sum(parts: Iterable[SourceStats], peak: int, current: int) -> SourceStats:
    ps = list(parts)
    replies: dict[int, int] = {}
    tags: dict[str, int] = {}
    for s in ps:
        for code, n in s.replies.items():
            replies[code] = replies.get(code, 0) + n
        for tag, n in s.tags.items():
            tags[tag] = tags.get(tag, 0) + n
    firsts = [s.first_message_at for s in ps if s.first_message_at is not None]
    lasts = [s.last_message_at for s in ps if s.last_message_at is not None]
    return SourceStats(
        connections=sum(s.connections for s in ps),
        refused_connections=sum(s.refused_connections for s in ps),
        current=current,
        peak=peak,
        messages=sum(s.messages for s in ps),
        recipients=sum(s.recipients for s in ps),
        message_bytes=sum(s.message_bytes for s in ps),
        bytes_in=sum(s.bytes_in for s in ps),
        bytes_out=sum(s.bytes_out for s in ps),
        hangups=sum(s.hangups for s in ps),
        replies=MappingProxyType(replies),
        tags=MappingProxyType(tags),
        first_message_at=min(firsts) if firsts else None,
        last_message_at=max(lasts) if lasts else None,
        message_times=tuple(sorted(t for s in ps for t in s.message_times)),
        connect_times=tuple(sorted(t for s in ps for t in s.connect_times)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencySample:
    """Open connections at one moment (server clock), in total and per source IP."""

    at: float
    total: int
    by_ip: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimEvent:
    """A refusal the server sent (recorded with ``timeline=True``)."""

    at: float
    ip: str
    code: int
    tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """A simulator's snapshot: "the truth from the receiver side"."""

    name: str
    profile: str
    host: str
    port: int
    #: Server clock (the event loop's ``time()`` unless a clock was injected).
    taken_at: float
    by_ip: Mapping[str, SourceStats]
    #: Sum over every source; ``peak`` is the peak of all connections at once.
    total: SourceStats
    #: Concurrency samples (every ``sample_interval`` seconds when sampling is on).
    samples: tuple[ConcurrencySample, ...] = ()
    #: Refusals in order (with ``timeline=True``).
    events: tuple[SimEvent, ...] = ()

    def source(self, ip: str) -> SourceStats:
        """The counters of ``ip`` (all zero if it never connected)."""
        return self.by_ip.get(ip) or _ZERO

    def peak_sampled(self, ip: str | None = None) -> int:
        """The highest sampled concurrency (of ``ip``, or in total)."""
        if ip is None:
            return max((s.total for s in self.samples), default=0)
        return max((s.by_ip.get(ip, 0) for s in self.samples), default=0)


_ZERO = SourceStats()


def summarise(
    counters: Mapping[str, SourceCounters], *, peak: int, current: int
) -> tuple[Mapping[str, SourceStats], SourceStats]:
    """Snapshots per source IP and their sum."""
    by_ip = {ip: c.snapshot() for ip, c in counters.items()}
    return MappingProxyType(by_ip), _sum(by_ip.values(), peak, current)
