"""The Spool protocol: what intake, the scheduler, delivery and the daemon ask of the store.

A spool keeps each accepted message (its :class:`~sluice.message.Envelope` and its bytes)
and the progress of every recipient, durably, until the message is removed. The rules every
implementation follows (checked by :mod:`sluice.spool.conformance`):

* ``store`` returns only when envelope and body are durable (test plan D1); concurrent
  stores share one commit (group commit). A failed store leaves nothing recoverable.
* ``mark`` is durable before it returns (D4): a recipient's final state is on disk before
  the caller may ``remove`` the message; deferrals (``QUEUED`` with attempts and the next
  attempt time) persist too, so retries survive a restart without a stampede.
* Removal is explicit (``remove``), never implied by marks: the owner of a message decides
  when it is done (e.g. after building a DSN that needs the body). A crash between the
  final ``mark`` and ``remove`` shows the message again at ``recover`` with final states.
* ``recover`` yields every stored message with its per-recipient progress without reading
  bodies, from a snapshot taken when iteration starts.
* Marks and removes of an unknown (already removed) message are ignored, so an operator's
  delete racing a delivery is harmless.

Public names: Spool, RcptUpdate, RcptProgress, SpooledMessage, UnknownMessageError,
CorruptMessageError, FRESH.
Raises: SpoolFullError (452 4.3.1), SpoolUnavailableError (451 4.3.0) and its subclasses
UnknownMessageError and CorruptMessageError.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sluice.errors import Fault, SpoolUnavailableError
from sluice.message import Envelope, MessageId, RcptState

__all__ = [
    "FRESH",
    "CorruptMessageError",
    "RcptProgress",
    "RcptUpdate",
    "Spool",
    "SpooledMessage",
    "UnknownMessageError",
]


class UnknownMessageError(SpoolUnavailableError):
    """``load_body`` of a message id that the spool does not hold (removed, or never stored)."""

    fault = Fault.LOCAL


class CorruptMessageError(SpoolUnavailableError):
    """A stored record failed its checksum or could not be decoded (test plan D2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptProgress:
    """Where one recipient of a spooled message stands."""

    state: RcptState = RcptState.QUEUED
    #: Delivery attempts made so far.
    attempts: int = 0
    #: Wall-clock time (epoch seconds) of the next attempt, or None for "as soon as possible".
    next_attempt: float | None = None
    #: Last reply or reason (for accounting and DSNs); "" when none.
    detail: str = ""


#: The progress of a recipient that has never been marked.
FRESH = RcptProgress()


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptUpdate:
    """A change of one recipient's progress, as given to :meth:`Spool.mark`."""

    msg_id: MessageId
    #: Index into ``Envelope.recipients``.
    rcpt_index: int
    state: RcptState
    attempts: int
    next_attempt: float | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.rcpt_index < 0 or self.attempts < 0:
            raise ValueError("rcpt_index and attempts must not be negative")

    def progress(self) -> RcptProgress:
        return RcptProgress(
            state=self.state,
            attempts=self.attempts,
            next_attempt=self.next_attempt,
            detail=self.detail,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SpooledMessage:
    """One message found by :meth:`Spool.recover`: id, envelope, progress per recipient."""

    msg_id: MessageId
    envelope: Envelope
    #: One entry per ``envelope.recipients``, same order.
    rcpts: tuple[RcptProgress, ...]


class Spool(Protocol):
    """A durable message store with group commit (see the module docstring for the rules)."""

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        """Store a new message; return its id once envelope and body are durable.

        Raises SpoolFullError when out of space, SpoolUnavailableError on any other failure;
        in both cases nothing of the message is recoverable.
        """
        ...

    async def mark(self, updates: Sequence[RcptUpdate]) -> None:
        """Record recipient progress durably; updates for unknown messages are ignored."""
        ...

    async def load_body(self, msg_id: MessageId) -> bytes:
        """The message bytes exactly as stored; UnknownMessageError if not held."""
        ...

    async def remove(self, msg_id: MessageId) -> None:
        """Forget a message durably (idempotent)."""
        ...

    def recover(self) -> Iterator[SpooledMessage]:
        """Every stored message with recipient progress, in id order, reading no bodies."""
        ...

    async def close(self) -> None:
        """Finish pending work and release the store; later calls raise SpoolUnavailableError."""
        ...
