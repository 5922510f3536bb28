"""The one error tree of Sluice: whose fault a failure is, and what to answer.

Every exception Sluice raises on purpose derives from :class:`SluiceError`. Each carries a
:class:`Fault` (who is to blame) and, where a peer is waiting for an answer, a reply hint:
the SMTP code and enhanced status code to send back. Packages subclass the branch that is
theirs and never raise foreign exceptions across their boundary (they map ``OSError``,
``dns.exception`` and friends at the edge)::

    SluiceError
    ├── ConfigError                 config/   the operator's file is wrong (exit 2)
    ├── ProtocolError               smtp/     an SMTP conversation went wrong
    │   ├── LocalProtocolError                we misused the engine (our bug)
    │   └── RemoteProtocolError               the peer broke the protocol (their fault)
    ├── SpoolError                  spool/    the store could not take or give a message
    │   ├── SpoolFullError                    out of space: 452 4.3.1, retry later
    │   └── SpoolUnavailableError             I/O or integrity failure: 451 4.3.0
    └── DeliveryError               delivery/ an outbound attempt failed (carries a scope)

Public names: SluiceError, Fault, ReplyHint, ConfigError, ProtocolError,
LocalProtocolError, RemoteProtocolError, SpoolError, SpoolFullError,
SpoolUnavailableError, DeliveryError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "DeliveryError",
    "Fault",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyHint",
    "SluiceError",
    "SpoolError",
    "SpoolFullError",
    "SpoolUnavailableError",
]


class Fault(enum.Enum):
    """Who is to blame for a failure."""

    #: The configuration file says something wrong or impossible.
    OPERATOR = "operator"
    #: The remote peer (injector or receiving MTA) broke the rules.
    PEER = "peer"
    #: Sluice itself misbehaved: a bug.
    LOCAL = "local"
    #: The machine ran out of something (disk, memory, descriptors) or an I/O call failed.
    RESOURCE = "resource"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyHint:
    """The SMTP reply a failure should produce (RFC 5321 code, RFC 3463 enhanced code)."""

    code: int
    enhanced: str
    text: str

    def line(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


class SluiceError(Exception):
    """Root of every error Sluice raises on purpose."""

    fault: Fault = Fault.LOCAL
    reply_hint: ReplyHint | None = ReplyHint(
        code=451, enhanced="4.3.0", text="Local error in processing"
    )


class ConfigError(SluiceError):
    """The configuration cannot be used; ``config.errors`` refines it with diagnostics."""

    fault = Fault.OPERATOR
    reply_hint = None


class ProtocolError(SluiceError):
    """An SMTP conversation broke a rule; ``reply_hint`` is what to send the peer."""

    fault = Fault.PEER

    def __init__(self, message: str, *, reply_hint: ReplyHint | None = None) -> None:
        super().__init__(message)
        if reply_hint is not None:
            self.reply_hint = reply_hint


class LocalProtocolError(ProtocolError):
    """We asked the protocol engine to do something the protocol forbids (our bug)."""

    fault = Fault.LOCAL


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (their fault)."""

    fault = Fault.PEER
    reply_hint = ReplyHint(code=500, enhanced="5.5.2", text="Syntax error")


class SpoolError(SluiceError):
    """The spool could not store, load or update a message."""

    fault = Fault.RESOURCE
    reply_hint = ReplyHint(code=451, enhanced="4.3.0", text="Temporary spool failure, try again")


class SpoolFullError(SpoolError):
    """No space left for the message: the client should try again later."""

    reply_hint = ReplyHint(code=452, enhanced="4.3.1", text="Insufficient system storage")


class SpoolUnavailableError(SpoolError):
    """The store failed (I/O error, corruption, shut down)."""


class DeliveryError(SluiceError):
    """An outbound delivery attempt failed before any per-recipient outcome was known."""

    fault = Fault.PEER
    reply_hint = None
