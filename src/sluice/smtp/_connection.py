"""Connection: the sans-IO SMTP engine's one public class (h11's shape), for either role.

``Connection(our_role=SERVER, ...)`` gives the server half (:mod:`._server`),
``Connection(our_role=CLIENT, ...)`` the client half (:mod:`._client`); both are instances
of :class:`Connection` and share its verbs:

* ``receive_data(data)`` — bytes from the peer; ``b""`` means the peer closed.
* ``next_event()`` — the next event, or NEED_DATA (feed more), or PAUSED (your move).
* ``send(event)`` — the bytes to write (a server sends Reply events, a client commands and
  message content).

No sockets, no clock, no asyncio. Raises LocalProtocolError (misuse, state → ERROR) and, from
``next_event``, RemoteProtocolError (the peer's fatal fault; state → ERROR; a server can
still ``send(exc.reply)`` before closing).

Public names: Connection.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sluice.smtp._errors import LocalProtocolError, RemoteProtocolError
from sluice.smtp._events import Event, Signal
from sluice.smtp._receivebuffer import ReceiveBuffer
from sluice.smtp._state import CLIENT, SERVER, Role, State
from sluice.smtp.limits import BareLineEnding, Limits, LongLinePolicy

__all__ = ["Connection"]


class Connection:
    """One SMTP conversation, one role. See the module docstring for the verbs."""

    __slots__ = ("_buf", "_eof", "_error", "_state", "limits")

    _by_role: ClassVar[dict[Role, type[Connection]]] = {}
    role: ClassVar[Role | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.role is not None:
            Connection._by_role[cls.role] = cls

    def __new__(cls, our_role: Role | None = None, **kwargs: Any) -> Connection:
        if cls.role is not None:
            return super().__new__(cls)
        if our_role is None:
            raise LocalProtocolError("Connection needs our_role=SERVER or CLIENT")
        # The role's class builds itself (a compiled class cannot be made by another's
        # __new__); Python then runs __init__ once more with our_role, which only checks it.
        return Connection._by_role[our_role](**kwargs)

    def __init__(
        self,
        our_role: Role | None = None,
        *,
        limits: Limits | None = None,
        bare_line_ending: BareLineEnding = BareLineEnding.REJECT,
        long_lines: LongLinePolicy = LongLinePolicy.REJECT,
        forbid_unauth_pipelining: bool = True,
        after_starttls: bool = False,
    ) -> None:
        """Arguments:

        our_role: SERVER (intake) or CLIENT (delivery); ``ServerConnection()`` and
            ``ClientConnection()`` imply it (and give type checkers the precise class).
        limits: message size, recipients, line limits (server role).
        bare_line_ending: REJECT or NORMALIZE bare CR/LF (server role; the client always
            normalises what it sends).
        long_lines: REJECT or ACCEPT content lines over 998 octets (server role).
        forbid_unauth_pipelining: server role: a client that sends more before a reply it
            must wait for (RFC 2920 §3.1: after EHLO, DATA, ...; anything without PIPELINING)
            gets RemoteProtocolError 554 5.5.0, like Postfix's smtpd_forbid_unauth_pipelining.
        after_starttls: this Connection continues a conversation after the TLS handshake:
            no greeting; EHLO comes first (RFC 3207 §4.2).
        """
        if our_role is not None and our_role is not self.role:
            raise LocalProtocolError(f"{type(self).__name__} plays {self.role}, not {our_role}")
        self.limits = limits if limits is not None else Limits()
        self._buf = ReceiveBuffer()
        self._eof = False
        self._error: RemoteProtocolError | None = None

    # -- shared verbs and properties ------------------------------------------------------

    @property
    def our_role(self) -> Role:
        assert self.role is not None
        return self.role

    @property
    def their_role(self) -> Role:
        return CLIENT if self.role is SERVER else SERVER

    @property
    def state(self) -> State:
        return self._state

    @property
    def extensions(self) -> dict[str, str]:
        """EHLO keywords (upper-cased) → parameters: those the server advertised (client
        role: received; server role: sent by the caller in its EHLO reply)."""
        raise NotImplementedError  # pragma: no cover - each role overrides it

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not yet consumed (for flow control: stop reading the socket
        while this is large and ``next_event`` keeps returning PAUSED)."""
        return len(self._buf)

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """In TLS_HANDOFF: the bytes that arrived after the STARTTLS exchange and whether the
        peer closed. They were sent in plaintext before the handshake, so they must not be
        acted on (CVE-2011-0411): a server should treat non-empty trailing data as an attack
        and close; a client discards it (reply injection)."""
        return bytes(self._buf.data), self._eof

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("received data after end of file")
            self._received(data)
        else:
            self._eof = True

    def _received(self, data: bytes) -> None:
        self._buf.append(data)

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._error = exc
        self._state = State.ERROR
        return exc

    def next_event(self) -> Event | Signal:  # pragma: no cover - overridden by each role
        raise NotImplementedError

    def send(self, event: Event) -> bytes:  # pragma: no cover - overridden by each role
        raise NotImplementedError
