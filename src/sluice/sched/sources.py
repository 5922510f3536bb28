"""Source IPs as the scheduler sees them: which local address a connection is made from,
and the limits shared by every queue that sends from it.

A queue may list its source IPs (``QueueSettings.sources``: a VMTA's ``smtp-source-host``
lines, with the ``source-ip-*`` limits that apply to them). The scheduler then chooses the
source of each new connection itself — round robin over the sources that are enabled for the
queue, have a free connection under ``source-ip-max-smtp-out`` and whose connect and message
rates allow it now — and names it in ``Connect.source``; the delivery layer binds to it.

Limits are **shared by key**: every queue of one scheduler that lists a :class:`SourceIp`
with the same ``(address, group)`` shares its connection count and its rate limiters. PowerMTA
sets ``source-ip-*`` per domain, so the daemon should set ``group`` to the queue's domain
(after ``queue-to``): ``hotmail.com/vmta1`` and ``hotmail.com/vmta2`` sending from the same
IP then share its hotmail limits, while gmail traffic from that IP has its own. ``group=""``
shares the limits across every queue using the address. A queue with no sources listed leaves
the choice to the delivery layer (``Connect.source`` is None) and has no per-source limits.

Public names: SourceIp, SourceState. ``SourceIp`` raises ``ValueError`` for a negative cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sluice.sched.throttle import Gcra, RateLimit, limiter

if TYPE_CHECKING:
    from sluice.sched.queues import ScheduledQueue

__all__ = ["SourceIp", "SourceState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceIp:
    """A local address to connect from, and its ``source-ip-*`` limits (None/0 = none)."""

    address: str
    #: Sharing key besides the address (the queue's domain for PowerMTA's semantics).
    group: str = ""
    #: ``source-ip-max-smtp-out``: connections from this address at once; 0 = unlimited.
    max_smtp_out: int = 0
    #: ``source-ip-max-msg-rate``: attempted recipients per interval.
    max_msg_rate: RateLimit | None = None
    #: ``source-ip-max-connect-rate``: new connections per interval.
    max_connect_rate: RateLimit | None = None
    #: ``source-ip-max-data-volume-rate``: bytes per interval.
    max_data_volume_rate: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.max_smtp_out < 0:
            raise ValueError("source max_smtp_out must be >= 0")

    @property
    def key(self) -> tuple[str, str]:
        return (self.address, self.group)


class SourceState:
    """The shared, mutable side of one source key: connections held and rate limiters."""

    __slots__ = ("connect", "conns", "message", "volume", "waiters")

    def __init__(self) -> None:
        self.conns = 0
        self.connect: Gcra | None = None
        self.message: Gcra | None = None
        self.volume: Gcra | None = None
        #: Queues waiting for a connection slot of this source (an ordered set).
        self.waiters: dict[ScheduledQueue, None] = {}

    def sync(self, source: SourceIp) -> None:
        """Make the limiters match ``source``'s description (the asking queue's)."""
        self.connect = limiter(self.connect, source.max_connect_rate)
        self.message = limiter(self.message, source.max_msg_rate)
        self.volume = limiter(self.volume, source.max_data_volume_rate)
