"""The asyncio Protocol under one outbound session: bytes ⇄ the sans-IO client engine.

``ClientProtocol`` feeds what arrives into ``smtp.ClientConnection()`` and collects the
replies (``read_replies``); the session writes a whole pipelined group, then awaits one
future that completes when the replies it expects have arrived — or the connection closed,
the engine saw a protocol error or a 421, or the deadline passed. One future per reply
group; nothing per command. The deadline is watched by one timer per connection that is
left armed between waits: a wait moves only the deadline, and the timer re-arms itself for
it when it fires early (it is re-armed at once only when the new deadline comes first).

Write-side flow control: the transport's high-water mark is 0, so ``pause_writing`` fires
whenever bytes wait in user space and ``resume_writing`` when all were handed to the kernel.
That tells exactly whether the final dot left the process (``unsent`` is 0), which decides
whether a lost connection may have caused a duplicate.

Public names: ClientProtocol, Wait (why a wait ended). Nothing raises out of the callbacks.
"""

from __future__ import annotations

import asyncio
import enum
from typing import cast

from sluice.smtp import (
    ClientConnection,
    RemoteProtocolError,
    Reply,
    State,
)

__all__ = ["ClientProtocol", "Wait"]

_DEAD = (State.CLOSED, State.ERROR)


class Wait(enum.Enum):
    """How a wait for replies ended."""

    #: Every expected reply arrived.
    DONE = "done"
    #: No complete reply set in time.
    TIMEOUT = "timeout"
    #: The connection is gone (closed by the peer, reset, a 421, a protocol error).
    CLOSED = "closed"


class ClientProtocol(asyncio.Protocol):
    """One outbound SMTP connection's transport callbacks (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conn = ClientConnection()
        self.transport: asyncio.Transport | None = None
        #: Replies received and not yet taken by the session, oldest first.
        self.replies: list[Reply] = []
        #: Why the connection ended ("" while it is up).
        self.closed_reason = ""
        self.closed = False
        #: The connection ended on a reply that broke SMTP (e.g. one that does not fit the
        #: command it would answer: the server may have answered out of order).
        self.protocol_error = False
        self.paused = False
        self._want = 0
        self._waiter: asyncio.Future[Wait] | None = None
        #: When the current wait times out (loop time).
        self._deadline = 0.0
        #: The deadline timer and the loop time it is armed for.
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack the same.
        tcp = cast(asyncio.Transport, transport)
        self.transport = tcp
        tcp.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        try:
            conn.receive_data(data)
            conn.read_replies(self.replies)
        except RemoteProtocolError as exc:
            self.protocol_error = True
            self._lost(f"protocol error from the server: {exc}")
            return
        if conn.state in _DEAD:
            self._lost("the server closed the session")
        elif self._waiter is not None and len(self.replies) >= self._want:
            self._finish(Wait.DONE)

    def eof_received(self) -> bool:
        try:
            self.conn.receive_data(b"")
            self.conn.read_replies(self.replies)  # replies come before EOF: usually none
        except RemoteProtocolError:
            pass
        self._lost("connection closed by the server")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc is not None else "connection closed"
        self._lost(reason)
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- for the session -------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Write ``data``; False if the connection is already gone."""
        transport = self.transport
        if transport is None or self.closed:
            return False
        transport.write(data)
        return True

    @property
    def unsent(self) -> int:
        """Bytes written and still in user space (not yet handed to the kernel)."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    async def wait_replies(self, count: int, timeout: float) -> Wait:
        """Wait until ``replies`` holds ``count`` replies (or the wait ends otherwise)."""
        if len(self.replies) >= count:
            return Wait.DONE
        if self.closed:
            return Wait.CLOSED
        loop = self.loop
        waiter: asyncio.Future[Wait] = loop.create_future()
        self._waiter = waiter
        self._want = count
        deadline = self._deadline = loop.time() + timeout
        timer = self._timer
        if timer is None or self._armed > deadline:
            if timer is not None:
                timer.cancel()
            self._armed = deadline
            self._timer = loop.call_at(deadline, self._on_timer)
        return await waiter

    async def drain(self, timeout: float) -> bool:
        """Wait until every written byte reached the kernel, allowing ``timeout`` seconds
        without progress (``data-send-timeout``); False on timeout or a lost connection."""
        while self.paused and not self.closed:
            before = self.unsent
            drain: asyncio.Future[None] = self.loop.create_future()
            self._drain = drain
            timer = self.loop.call_later(timeout, _set_none, drain)
            try:
                await drain
            finally:
                timer.cancel()
                self._drain = None
            if self.paused and not self.closed and self.unsent >= before:
                return False
        return not self.closed

    def abort(self, reason: str) -> None:
        """Drop the connection now (no QUIT)."""
        transport = self.transport
        self._lost(reason)
        if transport is not None:
            transport.abort()

    # -- internals -------------------------------------------------------------------------

    def _on_timer(self) -> None:
        """The timer fired: time out the wait whose deadline it was armed for, re-arm for a
        later deadline, or (no wait) stay disarmed until the next wait."""
        self._timer = None
        if self._waiter is None:
            return
        if self._deadline <= self._armed:
            self._finish(Wait.TIMEOUT)
        else:
            self._armed = self._deadline
            self._timer = self.loop.call_at(self._armed, self._on_timer)

    def _finish(self, how: Wait) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(how)

    def _lost(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.closed_reason = reason
            timer = self._timer  # nothing more to wait for: do not keep us alive until it fires
            if timer is not None:
                timer.cancel()
                self._timer = None
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self._waiter is not None:
            self._finish(Wait.DONE if len(self.replies) >= self._want else Wait.CLOSED)


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
