"""T21 (scaled): a connect-then-close flood leaks neither descriptors nor memory.

Four threads open and drop 5,000 connections as fast as they can, three times over,
against ``sluice run``: a third close at once, a third read the greeting first, a third
reset (SO_LINGER 0). A
1,000-connection warm-up round runs first so that the baseline includes the allocator's
steady state. Pass: the daemon's open descriptors return to the baseline ±10 and its RSS to
within 10% of the baseline once it settles; it still takes a message; no traceback is logged.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from tests.e2e.injectors import RawSmtpClient
from tests.reliability.rel_support import Daemon, fd_count, log_problems, proc_status, start_daemon

pytestmark = pytest.mark.interop

WARMUP = 1000
FLOOD = 5000
ROUNDS = 3
THREADS = 4
SETTLE = 15.0


def _flood(d: Daemon, total: int) -> tuple[int, int]:
    """Open and drop ``total`` connections from THREADS threads; (greetings read, refused)."""
    refused = [0]
    greeted = [0]
    lock = threading.Lock()

    def worker(n: int, offset: int) -> None:
        for i in range(n):
            try:
                s = socket.create_connection((d.host, d.port), timeout=5)
            except OSError:
                with lock:
                    refused[0] += 1
                continue
            with s:
                kind = (i + offset) % 3
                if kind == 1:
                    with contextlib.suppress(OSError):
                        if s.recv(512)[:4] in (b"220 ", b"421 "):
                            with lock:
                                greeted[0] += 1
                elif kind == 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    per = total // THREADS
    threads = [threading.Thread(target=worker, args=(per, k)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return greeted[0], refused[0]


def _settle(pid: int, fds0: int) -> tuple[int, int]:
    """Wait until descriptors are back near ``fds0`` (or SETTLE passes); (fds, RSS kB)."""
    deadline = time.monotonic() + SETTLE
    while True:
        fds = fd_count(pid)
        if abs(fds - fds0) <= 10 or time.monotonic() > deadline:
            time.sleep(0.5)
            return fd_count(pid), proc_status(pid)["VmRSS"]
        time.sleep(0.1)


def test_connection_flood_leaks_nothing(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    pid = d.pid
    _flood(d, WARMUP)
    time.sleep(1.0)
    fds0 = fd_count(pid)
    _fds_w, rss0 = _settle(pid, fds0)
    t0 = time.monotonic()
    greeted = refused = 0
    for _ in range(ROUNDS):
        g, r = _flood(d, FLOOD)
        greeted, refused = greeted + g, refused + r
    took = time.monotonic() - t0
    peak_fds = fd_count(pid)
    fds1, rss1 = _settle(pid, fds0)
    with RawSmtpClient(d.host, d.port) as c:
        c.ehlo()
        reply, _ = c.send_message("after@src.test", ["r@x.test"], b"Subject: x\r\n\r\nx\r\n")
        c.quit()
    assert d.proc.stop() == 0
    print(
        f"T21: {ROUNDS}×{FLOOD} connections in {took:.1f}s ({greeted} greetings read,"
        f" {refused} refused by the kernel);"
        f" fds {fds0} → {peak_fds} (right after) → {fds1}; RSS {rss0} → {rss1} kB"
    )
    assert reply.code == 250
    assert greeted >= ROUNDS * (FLOOD // 3) - 5  # the daemon really served the greeting readers
    assert abs(fds1 - fds0) <= 10
    assert rss1 <= rss0 * 1.10
    assert log_problems(d.log()) == []
