"""What one delivery attempt did to each recipient: an outcome kind and the scope it applies to.

The scope follows Postfix's ``smtp_trouble.c``: who a failure is about decides who pays for it.

============  ===============================================================================
scope         what the scheduler does with a TRANSIENT outcome
============  ===============================================================================
RECIPIENT     only these recipients are deferred (or bounced: ``bounce_on_4xx``, expiry)
MESSAGE       the same, for every recipient of the message in this transaction
SITE          these recipients are deferred *and* the queue goes into retry mode: no new
              connections to it until its retry time, then a single probe connection
SESSION       the connection ends; recipients not yet tried return to the ready set with no
              penalty (no attempt counted, no delay); repeated session failures with nothing
              delivered in between put the queue into retry mode
============  ===============================================================================

A PERMANENT outcome bounces the recipients it names, whatever the scope; with SITE or SESSION
scope it also ends the connection. ``dns_error`` marks a transient failure of name resolution:
the queue's retry delay is then ``retry_after_dns_error``.

Public names: OutcomeKind, Scope, Outcome, Result. ``Result`` raises ``ValueError`` for an
empty recipient list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Outcome", "OutcomeKind", "Result", "Scope"]


class OutcomeKind(enum.Enum):
    """How an attempt ended for a recipient (RFC 5321 §4.2.1 reply classes)."""

    #: 2xx after the final dot: the remote MTA took responsibility.
    DELIVERED = "delivered"
    #: 4xx, connection failure, timeout, temporary DNS failure: try again later.
    TRANSIENT = "transient"
    #: 5xx, NXDOMAIN, null MX: give up and bounce.
    PERMANENT = "permanent"


class Scope(enum.Enum):
    """Whom a failure is about (Postfix ``smtp_trouble.c``: recipient, message, site, session)."""

    #: One recipient (a reply to RCPT TO, or a per-recipient reply after DATA).
    RECIPIENT = "recipient"
    #: The whole message (a reply to MAIL FROM or to the final dot).
    MESSAGE = "message"
    #: The destination: connection refused or timed out, 4xx/5xx greeting, DNS failure.
    SITE = "site"
    #: This connection only: lost, timed out or a 421 mid-session.
    SESSION = "session"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """The verdict on one or more recipients, with the reply text that caused it."""

    kind: OutcomeKind
    scope: Scope = Scope.RECIPIENT
    #: The remote reply ("450 4.2.1 mailbox busy") or a local description
    #: ("connection refused"); kept for the monitor, accounting and pattern rules.
    text: str = ""
    #: True when the failure was name resolution (retry after ``retry_after_dns_error``).
    dns_error: bool = False

    def __hash__(self) -> int:
        # Written out: equal outcomes have equal text, so the text alone is a valid hash, and
        # compiled it is a native call (the generated one is Python code over every field).
        return hash(self.text)

    @classmethod
    def delivered(cls, text: str = "250 ok") -> Outcome:
        return cls(kind=OutcomeKind.DELIVERED, text=text)

    @classmethod
    def transient(cls, text: str, scope: Scope = Scope.RECIPIENT, *, dns: bool = False) -> Outcome:
        return cls(kind=OutcomeKind.TRANSIENT, scope=scope, text=text, dns_error=dns)

    @classmethod
    def permanent(cls, text: str, scope: Scope = Scope.RECIPIENT, *, dns: bool = False) -> Outcome:
        return cls(kind=OutcomeKind.PERMANENT, scope=scope, text=text, dns_error=dns)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One outcome for some recipients of one message, as reported by delivery."""

    msg_id: int
    #: Recipient indexes (positions in the envelope's recipient list).
    rcpts: tuple[int, ...]
    outcome: Outcome

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(self, *, msg_id: int, rcpts: tuple[int, ...], outcome: Outcome) -> None:
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "rcpts", rcpts)
        object.__setattr__(self, "outcome", outcome)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.rcpts:
            raise ValueError("a result names at least one recipient")
