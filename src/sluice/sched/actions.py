"""The decisions the scheduler returns, for the daemon to carry out ("decide, then do").

``Scheduler.plan`` returns ``Connect``, ``Deliver``, ``Close``, ``Bounce`` and one ``Wake``;
``Scheduler.report``, ``connection_failed`` and the operator commands return the fate of
recipients (``Delivered``, ``Defer``, ``Bounce``, ``Removed``) and ``Close``. The daemon
executes them in order: open or close connections, run transactions, write the spool and the
accounting file, send DSNs, and call ``plan`` again no later than ``Wake.at``.

Public names: Transaction, Connect, Deliver, Close, CloseReason, Delivered, Defer, Bounce,
BounceReason, Removed, Wake, Action. Nothing here raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
    "Removed",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect:
    """Open a connection for ``queue`` (routing, MX, connect, greeting, EHLO), then call
    ``connection_opened`` or ``connection_failed`` with this ``connection_id``."""

    queue: str
    connection_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """Run these transactions, in order, on the open connection; report each outcome."""

    queue: str
    connection_id: int
    transactions: tuple[Transaction, ...]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """Close this connection (QUIT), then call ``connection_closed``."""

    queue: str
    connection_id: int
    reason: CloseReason


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """These recipients are delivered: mark them in the spool, write a ``d`` record."""

    queue: str
    msg_id: int
    rcpts: tuple[int, ...]
    text: str


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Wake:
    """Call ``plan`` again at ``at`` (epoch seconds) even if nothing else happens."""

    at: float


Action = Connect | Deliver | Close | Delivered | Defer | Bounce | Removed | Wake
