"""T03 (scaled): a transaction that never got its 250 never becomes a message.

200 broken transactions against ``sluice run --no-deliver``:
  - 20 × ``swaks --drop-after-send DATA`` (the session is cut right after DATA);
  - 150 raw clients that send half a body and then reset the connection (SO_LINGER 0);
  - 3 rounds of 10 clients streaming a 1 MB body when the daemon is killed with SIGKILL,
    each followed by a restart.
Then one complete message (the control, which must be the only one stored). After a
graceful stop the spool holds exactly that message, nothing is quarantined, and the spool
directory holds only the store's own files (no temp files left behind).
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest
from tests.e2e.injectors import RawSmtpClient
from tests.reliability.rel_support import (
    Daemon,
    is_spool_file,
    log_problems,
    read_spool,
    start_daemon,
)

pytestmark = pytest.mark.interop

SWAKS_RUNS = 20
RST_RUNS = 150
KILL_ROUNDS = 3
STREAMS_PER_KILL = 10
_CHUNK = b"partial body line that never ends its message\r\n" * 200


def _begin_data(d: Daemon, n: int) -> RawSmtpClient:
    c = RawSmtpClient(d.host, d.port, timeout=15)
    c.ehlo()
    c.command(f"MAIL FROM:<t03-{n}@src.test>", 250)
    c.command("RCPT TO:<r@x.test>", 250)
    c.command("DATA", 354)
    c.send_raw(f"Subject: partial {n}\r\nX-Test-Seq: {n}\r\n\r\n".encode() + _CHUNK)
    return c


def _reset(c: RawSmtpClient) -> None:
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def _swaks_drop_after_data(d: Daemon) -> None:
    for _ in range(SWAKS_RUNS):
        run = subprocess.run(
            [
                "swaks",
                "--server",
                f"{d.host}:{d.port}",
                "--from",
                "t03@src.test",
                "--to",
                "r@x.test",
                "--drop-after-send",
                "DATA",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        # swaks got as far as sending DATA, then cut the session (no body, no dot).
        assert b" -> DATA" in run.stdout, run.stdout
        assert b"Dropping connection" in run.stdout, run.stdout


def _streams_then_kill(d: Daemon, round_no: int) -> None:
    started = threading.Barrier(STREAMS_PER_KILL + 1)
    errors: list[BaseException] = []

    def stream(n: int) -> None:
        try:
            c = _begin_data(d, n)
        except BaseException as exc:
            errors.append(exc)
            started.abort()
            return
        started.wait(10)
        try:
            while True:  # keep streaming until the daemon is gone
                c.send_raw(_CHUNK)
        except OSError:
            pass
        finally:
            c.close()

    threads = [
        threading.Thread(target=stream, args=(10_000 * round_no + i,))
        for i in range(STREAMS_PER_KILL)
    ]
    for t in threads:
        t.start()
    started.wait(10)
    d.proc.kill9()
    for t in threads:
        t.join(10)
    assert not errors
    d.proc.start()


def test_partial_transactions_store_nothing(tmp_path: Path) -> None:
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed")
    d = start_daemon(tmp_path)
    try:
        _swaks_drop_after_data(d)
        for n in range(RST_RUNS):
            _reset(_begin_data(d, n))
        for r in range(KILL_ROUNDS):
            _streams_then_kill(d, r + 1)
        with RawSmtpClient(d.host, d.port) as c:  # the control: a whole message
            c.ehlo()
            reply, _ = c.send_message(
                "ok@src.test", ["r@x.test"], b"Subject: control\r\n\r\nok\r\n"
            )
            assert reply.code == 250
            c.quit()
    finally:
        assert d.proc.stop() == 0
    contents = read_spool(d.spool)
    partial = SWAKS_RUNS + RST_RUNS + KILL_ROUNDS * STREAMS_PER_KILL
    print(f"T03: {partial} partial transactions, {len(contents.messages)} stored (1 control)")
    assert [env.sender for _, env, _ in contents.messages] == ["ok@src.test"]
    assert contents.quarantined == 0
    assert all(is_spool_file(p.name) for p in d.spool.iterdir())
    assert log_problems(d.log()) == []
