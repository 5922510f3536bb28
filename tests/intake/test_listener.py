"""Connection caps, deadlines, early talkers, shutdown and fd hygiene (A8, A9, T13, T20, T21)."""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import threading
import time
from collections.abc import Callable

import pytest
from intake_harness import UNTRUSTED, Harness, read_reply, read_until_closed

from sluice.clock import FakeClock
from sluice.intake.listener import ListenerLimits
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.message import Envelope, MessageId
from sluice.spool import MemorySpool

MSG = b"Subject: t\r\n\r\nx\r\n"


def _wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_per_client_cap_gives_421_470(harness_factory: Callable[..., Harness]) -> None:
    limits = ListenerLimits(max_smtp_in_per_client=3, sweep_interval=0.02)
    h = harness_factory(limits=limits)
    socks = [h.connect() for _ in range(3)]
    for s in socks:
        assert read_reply(s).startswith(b"220")
    extra = h.connect()
    assert read_until_closed(extra).startswith(b"421 4.7.0")
    # Another client address is not affected.
    other = h.connect(source="127.0.0.67")
    assert read_reply(other).startswith(b"220")
    socks[0].close()
    _wait_for(lambda: h.session_count() == 3)
    again = h.connect()
    assert read_reply(again).startswith(b"220")


def test_total_cap_gives_421(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(limits=ListenerLimits(total_max_smtp_in=2, sweep_interval=0.02))
    a, b = h.connect("127.0.0.1"), h.connect("127.0.0.2")
    read_reply(a)
    read_reply(b)
    assert read_until_closed(h.connect("127.0.0.3")).startswith(b"421 4.7.0")


def test_idle_and_command_deadlines_on_fake_clock(harness_factory: Callable[..., Harness]) -> None:
    clock = FakeClock()
    limits = ListenerLimits(command_timeout=60, idle_timeout=30, sweep_interval=0.01)
    h = harness_factory(clock=clock, limits=limits)
    idle = h.connect()
    read_reply(idle)
    idle.sendall(b"EHLO c.test\r\n")
    read_reply(idle)
    trickle = h.connect()
    read_reply(trickle)
    trickle.sendall(b"EH")  # a command that never ends
    _wait_for(
        lambda: h.call(
            lambda: all(s._in_command for s in h.server.sessions if s.conn.buffered_bytes)
        )
    )
    h.call(lambda: clock.advance(29))
    time.sleep(0.05)
    assert h.session_count() == 2
    h.call(lambda: clock.advance(2))  # idle past 30 s; the trickler's command has 60 s
    assert read_until_closed(idle).startswith(b"421 4.4.2")
    trickle.sendall(b"L")  # more bytes do not extend a per-command deadline
    time.sleep(0.05)
    assert h.session_count() == 1
    h.call(lambda: clock.advance(30))
    assert read_until_closed(trickle).startswith(b"421 4.4.2")
    _wait_for(lambda: h.session_count() == 0)


def test_early_talker_gets_554_550(harness_factory: Callable[..., Harness]) -> None:
    limits = ListenerLimits(untrusted_greet_pause=0.3, sweep_interval=0.02)
    h = harness_factory(limits=limits, policies=SourcePolicyMap([(UNTRUSTED, SourcePolicy())]))
    sock = h.connect(source=UNTRUSTED)
    sock.sendall(b"EHLO early.test\r\nMAIL FROM:<a@x.test>\r\n")
    got = read_until_closed(sock)
    assert got.startswith(b"554 5.5.0")
    assert b"220" not in got
    # A patient untrusted client is greeted after the pause; trusted ones at once.
    patient = h.connect(source=UNTRUSTED)
    t0 = time.monotonic()
    assert read_reply(patient).startswith(b"220")
    assert time.monotonic() - t0 >= 0.25
    trusted = h.connect()
    assert read_reply(trusted).startswith(b"220")


class _GatedSpool(MemorySpool):
    """A spool whose stores wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        self.entered.set()
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        return await super().store(envelope, body)


def test_shutdown_421_after_in_flight_store(harness_factory: Callable[..., Harness]) -> None:
    spool = _GatedSpool()
    h = harness_factory(spool=spool)
    idle = h.connect()
    read_reply(idle)
    busy = h.connect()
    read_reply(busy)
    busy.sendall(b"EHLO c.test\r\n")
    read_reply(busy)
    busy.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    got = b""
    while got.count(b"\r\n") < 3:
        got += busy.recv(4096)
    busy.sendall(MSG + b".\r\n")
    assert spool.entered.wait(5)
    done = h.loop.call_soon_threadsafe
    fut = asyncio.run_coroutine_threadsafe(h.server.shutdown(), h.loop)
    assert read_until_closed(idle).startswith(b"421 4.3.2")
    time.sleep(0.05)
    assert not fut.done()  # waits for the store in flight
    spool.gate.set()
    rest = read_until_closed(busy)
    assert rest.startswith(b"250 2.0.0 Ok: queued as 1\r\n421 4.3.2")
    fut.result(5)
    done(lambda: None)
    assert len(h.messages()) == 1
    # Closed for new connections.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", h.port), timeout=1).close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_t21_connect_then_close_returns_fds(harness: Harness) -> None:
    with smtplib.SMTP("127.0.0.1", harness.port) as s:  # warm up
        s.noop()
    _wait_for(lambda: harness.session_count() == 0)
    baseline = _open_fds()
    seen = harness.call(lambda: harness.server.connections_total)
    for i in range(1000):
        sock = socket.create_connection(("127.0.0.1", harness.port))
        if i % 2:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        sock.close()
    _wait_for(lambda: harness.call(lambda: harness.server.connections_total) == seen + 1000)
    _wait_for(lambda: harness.session_count() == 0, timeout=10)
    _wait_for(lambda: abs(_open_fds() - baseline) <= 10, timeout=10)
    assert harness.call(lambda: dict(harness.server.per_client)) == {}
    with smtplib.SMTP("127.0.0.1", harness.port) as s:
        assert s.noop()[0] == 250
