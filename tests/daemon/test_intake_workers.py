"""Intake in worker processes (``intake-processes``): the real ``sluice run`` with workers.

What must hold when SMTP sessions run in separate processes from the spool: every 250 is a
stored message with a distinct queue id, a worker that dies is started again, workers never
outlive their queue manager (even on SIGKILL), reloads reach the workers, and SIGTERM still
drains sessions with 421.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.reliability.rel_support import read_spool, start_daemon, tree_pids

pytestmark = pytest.mark.interop

_MESSAGE = b"Subject: worker test\r\nFrom: a@x.test\r\nTo: b@sink.test\r\n\r\nbody line\r\n"


def _send(port: int, n: int, *, size: int = 0) -> list[str]:
    """Send ``n`` messages on one connection each; the queue ids from the 250 replies."""
    body = _MESSAGE + (b"x" * 70 + b"\r\n") * (size // 72)
    ids: list[str] = []
    for _ in range(n):
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            client.ehlo("client.test")
            client.mail("a@x.test")
            client.rcpt("b@sink.test")
            code, text = client.data(body)
            assert code == 250, (code, text)
            ids.append(text.decode().rsplit(" ", 1)[-1])
    return ids


def _workers(pid: int) -> list[int]:
    return [p for p in tree_pids(pid) if p != pid]


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_two_workers_store_every_acknowledged_message_once(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, extra=["intake-processes 2"])
    try:
        assert len(_workers(d.pid)) == 2
        with ThreadPoolExecutor(8) as pool:
            batches = list(pool.map(lambda _: _send(d.port, 10), range(8)))
        ids = [i for batch in batches for i in batch]
    finally:
        assert d.proc.stop() == 0
    assert len(ids) == 80
    assert len(set(ids)) == 80
    stored = read_spool(d.spool)
    assert sorted(str(m[0]) for m in stored.messages) == sorted(ids)
    assert "2 intake worker process(es)" in d.log()


def test_a_dead_worker_is_started_again(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, extra=["intake-processes 1"])
    try:
        (first,) = _workers(d.pid)
        os.kill(first, signal.SIGKILL)
        d.proc.wait_for_stderr(r"intake worker 0 exited with status -9; starting it again")
        assert _wait(lambda: len(_workers(d.pid)) == 1 and _workers(d.pid) != [first])
        d.proc.wait_for_stderr(r"(?s)starting it again.*listening for SMTP")
        ids = _send(d.port, 3)
    finally:
        assert d.proc.stop() == 0
    assert len(read_spool(d.spool).messages) == 3
    assert len(set(ids)) == 3


def test_workers_die_with_a_killed_queue_manager(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, extra=["intake-processes 2"])
    workers = _workers(d.pid)
    assert len(workers) == 2
    os.kill(d.pid, signal.SIGKILL)  # the manager alone: nothing else signals the workers
    d.proc.proc.wait(10)

    def gone() -> bool:
        return not any(Path(f"/proc/{w}").exists() for w in workers)

    assert _wait(gone), "intake workers outlived their queue manager"
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", d.port))  # the listener is free for the next start
    finally:
        probe.close()
    d.proc.start()
    try:
        _send(d.port, 1)
    finally:
        assert d.proc.stop() == 0


def test_reload_reaches_the_workers(tmp_path: Path) -> None:
    sources = {
        "127.0.0.1": {"always-allow-relaying": "yes", "max-message-size": "100000"},
        "0/0": {"always-allow-relaying": "no"},
    }
    d = start_daemon(tmp_path, sources=sources, extra=["intake-processes 1"])
    try:
        _send(d.port, 1, size=2000)
        text = d.config.read_text()
        d.config.write_text(text.replace("max-message-size 100000", "max-message-size 1000"))
        os.kill(d.pid, signal.SIGHUP)
        d.proc.wait_for_stderr(r"intake worker 0: configuration reloaded")
        with pytest.raises(AssertionError, match="552"):
            _send(d.port, 1, size=2000)
    finally:
        assert d.proc.stop() == 0
    assert len(read_spool(d.spool).messages) == 1


def test_sigterm_drains_sessions_in_the_workers(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, extra=["intake-processes 1"])
    client = smtplib.SMTP("127.0.0.1", d.port, timeout=20)
    client.ehlo("client.test")
    workers = _workers(d.pid)
    d.proc.proc.send_signal(signal.SIGTERM)
    codes: list[int] = []
    try:
        for _ in range(100):  # until the 421 closes the session
            code, _text = client.noop()
            codes.append(code)
            if code != 250:
                break
            time.sleep(0.05)
    except smtplib.SMTPServerDisconnected:
        codes.append(0)
    finally:
        client.close()
    assert codes[-1] == 421, codes
    assert d.proc.proc.wait(20) == 0
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
