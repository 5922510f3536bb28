"""Test helper: a live intake server on loopback, on its own uvloop loop in a thread.

Tests talk to it with real blocking clients (smtplib, swaks, smtp-source, raw sockets) from
the test thread; ``Harness.call`` runs a function on the server's loop to read its state.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import uvloop

from sluice.clock import Clock
from sluice.daemon.system_clock import SystemClock
from sluice.intake.inject import Injector, QueueIndex
from sluice.intake.listener import Hooks, IntakeServer, ListenerLimits
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.message import Envelope
from sluice.spool import MemorySpool, Spool

T = TypeVar("T")

UNTRUSTED = "127.0.0.66"
FAST = ListenerLimits(command_timeout=5.0, idle_timeout=5.0, sweep_interval=0.02)


class Harness:
    """One IntakeServer on 127.0.0.1:<free port>, served from a background thread."""

    def __init__(
        self,
        *,
        policies: SourcePolicyMap | None = None,
        limits: ListenerLimits = FAST,
        spool: Spool | None = None,
        spool_open: Callable[[], Awaitable[Any]] | None = None,
        known_vmtas: frozenset[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else SystemClock()
        self.queues = QueueIndex()
        self.received: list[tuple[int, Envelope, int]] = []
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        if spool_open is not None:
            spool = self.run(spool_open())
        self.spool: Any = spool if spool is not None else MemorySpool()
        self._owns_spool = spool_open is not None
        injector = Injector(
            spool=self.spool, clock=self.clock, hostname="mta.test", known_vmtas=known_vmtas
        )

        def on_received(msg_id: int, env: Envelope, size: int) -> None:
            self.received.append((msg_id, env, size))

        async def start() -> tuple[IntakeServer, int]:
            server = IntakeServer(
                injector=injector,
                policies=policies if policies is not None else SourcePolicyMap(),
                clock=self.clock,
                limits=limits,
                hooks=Hooks(on_accepted=self.queues, on_received=on_received),
            )
            _, port = await server.listen("127.0.0.1", 0)
            return server, port

        self.server, self.port = self.run(start())
        self._stopped = False
        self._socks: list[socket.socket] = []

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        fut: Future[T] = Future()

        def runner() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # pragma: no cover - surfaced in the test thread
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(runner)
        return fut.result(timeout)

    def messages(self) -> list[tuple[Envelope, bytes]]:
        def read() -> list[tuple[Envelope, bytes]]:
            spool = self.spool
            return [(m.envelope, spool.disk.messages[m.msg_id].body) for m in spool.recover()]

        return self.call(read)

    def session_count(self) -> int:
        return self.call(lambda: len(self.server.sessions))

    def connect(self, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(
            ("127.0.0.1", self.port), timeout=timeout, source_address=(source, 0)
        )
        self._socks.append(sock)
        return sock

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for sock in self._socks:
            sock.close()
        self.run(self.server.shutdown())
        if self._owns_spool:
            self.run(self.spool.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def read_reply(sock: socket.socket) -> bytes:
    """Read one complete (possibly multi-line) reply; b"" if the peer closed first."""
    buf = b""
    while True:
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return buf
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def read_until_closed(sock: socket.socket) -> bytes:
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


TRUSTED_ALL = SourcePolicy(always_allow_relaying=True)
