"""The decisions the scheduler returns, for the daemon to carry out ("decide, then do").

``Scheduler.plan`` returns ``Connect``, ``Deliver``, ``Close``, ``Bounce`` and one ``Wake``;
``Scheduler.report``, ``connection_failed`` and the operator commands return the fate of
recipients (``Delivered``, ``Defer``, ``Bounce``, ``Removed``) and ``Close``. The daemon
executes them in order: open or close connections, run transactions, write the spool and the
accounting file, send DSNs, and call ``plan`` again no later than ``Wake.at``.

Traffic shaping adds three more: ``ModeChanged`` (a queue entered or left backoff: log it,
send ``backoff-notify``), ``SourceDisabled`` (a reply rule stopped a source IP for a queue:
log it, ``disabled-source-ip-notify``) and ``Reroute`` (``backoff-reroute-to-virtual-mta``:
these recipients left the queue; ``add`` them to the queue of the same domain on
``to_vmta`` with the given arrival, attempts and next attempt, and record the new VMTA in the
spool).

Public names: Transaction, Connect, Deliver, Close, CloseReason, Delivered, Defer, Bounce,
BounceReason, Removed, Wake, ModeChanged, SourceDisabled, Reroute, Action. Nothing here
raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sluice.sched.backoff import QueueMode

__all__ = [
    "Action",
    "Bounce",
    "BounceReason",
    "Close",
    "CloseReason",
    "Connect",
    "Defer",
    "Deliver",
    "Delivered",
    "ModeChanged",
    "Removed",
    "Reroute",
    "SourceDisabled",
    "Transaction",
    "Wake",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transaction:
    """One SMTP transaction to run: a message and the recipients (indexes) it is for."""

    msg_id: int
    rcpts: tuple[int, ...]
    #: Attempts already made for these recipients (0 on the first try).
    attempts: int

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, msg_id: int, rcpts: tuple[int, ...], attempts: int) -> None:
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "rcpts", rcpts)
        object.__setattr__(self, "attempts", attempts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect:
    """Open a connection for ``queue`` (routing, MX, connect, greeting, EHLO), then call
    ``connection_opened`` or ``connection_failed`` with this ``connection_id``. ``source`` is
    the local address to bind to when the queue lists its sources (None: delivery chooses)."""

    queue: str
    connection_id: int
    source: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """Run these transactions, in order, on the open connection; report each outcome."""

    queue: str
    connection_id: int
    transactions: tuple[Transaction, ...]

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self, *, queue: str, connection_id: int, transactions: tuple[Transaction, ...]
    ) -> None:
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "connection_id", connection_id)
        object.__setattr__(self, "transactions", transactions)


class CloseReason(enum.Enum):
    """Why the scheduler wants a connection closed."""

    #: No work for it within ``connection_idle_timeout``.
    IDLE = "idle"
    #: ``max-msg-per-connection`` reached.
    MAX_MSG = "max-msg-per-connection"
    #: ``max-errors-per-connection`` reached.
    MAX_ERRORS = "max-errors-per-connection"
    #: A session-scope failure: this connection is unusable.
    SESSION_ERROR = "session-error"
    #: A site-scope failure: the queue is in retry mode.
    RETRY_MODE = "retry-mode"
    #: The queue was paused.
    PAUSED = "paused"
    #: The queue's connection cap dropped below its open connections (backoff, reload).
    OVER_LIMIT = "over-limit"
    #: A higher-priority queue waits for a slot under ``total-max-smtp-out``
    #: (``allow-priority-interruption``): this idle connection of a lower-priority queue
    #: gives its slot up.
    PRIORITY = "priority"
    #: A reply rule disabled the connection's source IP for the queue.
    SOURCE_DISABLED = "source-disabled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """Close this connection (QUIT), then call ``connection_closed``."""

    queue: str
    connection_id: int
    reason: CloseReason

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, queue: str, connection_id: int, reason: CloseReason) -> None:
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "connection_id", connection_id)
        object.__setattr__(self, "reason", reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """These recipients are delivered: mark them in the spool, write a ``d`` record."""

    queue: str
    msg_id: int
    rcpts: tuple[int, ...]
    text: str

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, queue: str, msg_id: int, rcpts: tuple[int, ...], text: str) -> None:
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "rcpts", rcpts)
        object.__setattr__(self, "text", text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Defer:
    """These recipients failed temporarily: store ``attempts`` and ``next_attempt`` in the
    spool (so a restart keeps the schedule) and write a ``t`` record if configured."""

    queue: str
    msg_id: int
    rcpts: tuple[int, ...]
    attempts: int
    next_attempt: float
    text: str


class BounceReason(enum.Enum):
    """Why recipients bounce."""

    #: A permanent (5xx) failure.
    PERMANENT = "permanent"
    #: Undelivered at ``bounce-after``.
    EXPIRED = "expired"
    #: A 4xx with ``bounce-on-4xx-status`` set.
    BOUNCE_ON_4XX = "bounce-on-4xx"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounce:
    """These recipients failed for good: mark them, write a ``b`` record, owe a DSN."""

    queue: str
    msg_id: int
    rcpts: tuple[int, ...]
    reason: BounceReason
    #: The reply that caused it (the last one seen, for an expiry), or "" if none.
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Removed:
    """These recipients were deleted by an operator: mark them deleted, no DSN."""

    queue: str
    msg_id: int
    rcpts: tuple[int, ...]

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, queue: str, msg_id: int, rcpts: tuple[int, ...]) -> None:
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "rcpts", rcpts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Wake:
    """Call ``plan`` again at ``at`` (epoch seconds) even if nothing else happens."""

    at: float

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, at: float) -> None:
        object.__setattr__(self, "at", at)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChanged:
    """``queue`` entered (or left) backoff at the reply ``text`` (or why it left); in backoff,
    ``until`` is when it returns to normal by itself (None: never by itself)."""

    queue: str
    mode: QueueMode
    until: float | None
    text: str
    #: The actions in force, as the monitor shows them ("max-smtp-out=5 max-msg-rate=…").
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceDisabled:
    """A reply rule stopped ``queue`` using ``source`` (None: the queue's only, unnamed
    source) until ``until`` (None: until a reload or restart)."""

    queue: str
    source: str | None
    until: float | None
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reroute:
    """These recipients left ``queue`` for the same domain on ``to_vmta``
    (``backoff-reroute-to-virtual-mta``): ``add`` them there with these values."""

    queue: str
    to_vmta: str
    msg_id: int
    rcpts: tuple[int, ...]
    arrival: float
    attempts: int
    #: When they were due in the old queue (None: ready now).
    next_attempt: float | None


Action = (
    Connect
    | Deliver
    | Close
    | Delivered
    | Defer
    | Bounce
    | Removed
    | Wake
    | ModeChanged
    | SourceDisabled
    | Reroute
)
