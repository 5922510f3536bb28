"""The SMTP engine's protocol errors, each carrying the reply to send (its reply hint).

Both derive from the shared tree in :mod:`sluice.errors`, so a caller that catches
``sluice.errors.RemoteProtocolError`` catches ours too::

    sluice.errors.ProtocolError
    ├── sluice.errors.LocalProtocolError
    │   └── LocalProtocolError        we asked the engine for something SMTP forbids (our bug)
    └── sluice.errors.RemoteProtocolError
        └── RemoteProtocolError       the peer broke SMTP beyond recovery: send ``reply``, close

Recoverable peer mistakes (bad syntax, bad sequence, a too-long path) are *not* errors: the
server Connection turns them into a ``BadCommand`` event carrying the reply to send.

Public names: LocalProtocolError, RemoteProtocolError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice import errors as _base

if TYPE_CHECKING:
    from sluice.smtp.replies import Reply

__all__ = ["LocalProtocolError", "RemoteProtocolError"]


def _hint(reply: Reply) -> _base.ReplyHint:
    enhanced = str(reply.enhanced) if reply.enhanced is not None else ""
    return _base.ReplyHint(code=reply.code, enhanced=enhanced, text=reply.text)


class LocalProtocolError(_base.LocalProtocolError):
    """We misused the engine: a command out of sequence, a reply nobody asked for, a body
    line the wire cannot carry. The Connection is left in state ERROR when raised by it."""


class RemoteProtocolError(_base.RemoteProtocolError):
    """The peer broke SMTP in a way the session cannot survive (a line flood, talking before
    the greeting, a bare LF in message content under the reject policy, an unparsable reply).

    ``reply`` (server role) is what to send before closing; ``reply_hint`` mirrors it in the
    shape of :class:`sluice.errors.ReplyHint`. The Connection is in state ERROR afterwards.
    """

    reply: Reply | None

    def __init__(self, message: str, *, reply: Reply | None = None) -> None:
        super().__init__(message, reply_hint=_hint(reply) if reply is not None else None)
        self.reply = reply
