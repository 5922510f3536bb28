"""T01: the daemon's ``250 … queued as N`` leaves only after the message is fsync'd.

``sluice run`` is started under ``strace -f -tt`` (from its first instruction, so the spool's
opens and its directory fsync are in the trace); 100 messages go in over smtplib from five
sessions. Each body carries a token ``TOKEN-n-END``; after the run the spool maps queue id →
token, and every write of ``250 … queued as N`` to a client socket must come after (1) a
write of that token to a file in the spool directory and (2) a completed fsync/fdatasync of
that file, and (3) after an fsync of the spool directory (test plan D1, via
tests/spool/strace_check.py). The negative control runs the same under ``eatmydata``: the
fsyncs vanish from the trace and the check must fail.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from tests.e2e.injectors import inject
from tests.e2e.ledger import Ledger, make_body
from tests.reliability.rel_support import Daemon, read_spool, start_daemon
from tests.spool import strace_check

pytestmark = pytest.mark.interop

MESSAGES = 100
TRACE = (
    "strace",
    "-f",
    "-tt",
    "-qq",
    "-s",
    "70000",
    "-e",
    "trace=openat,close,write,pwrite64,pwritev,writev,fsync,fdatasync,rename,renameat2,"
    "sendto,sendmsg",
)
#: The calls that can carry a reply to a client socket; folded into ``write`` for the checker.
_SOCKET_WRITES = frozenset({"writev", "sendto", "sendmsg"})
_TIMESTAMP = re.compile(r"^(\d+\s+)?\d\d:\d\d:\d\d\.\d+\s+", re.MULTILINE)
_QUEUED = re.compile(r"250 2\.0\.0 [^\"]*?queued as (\d+)")
_TOKEN = re.compile(rb"TOKEN-\d+-END")


def _tracee_pid(strace_pid: int) -> int:
    """The traced interpreter: strace's child (eatmydata execs, so it is the same pid)."""
    children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
    return int(children[0])


def _run(tmp_path: Path, wrap: tuple[str, ...]) -> tuple[int, list[str], int, int]:
    """(acks seen, violations, messages acked by the client, fsyncs) for one traced run."""
    log = tmp_path / "strace.log"
    d: Daemon = start_daemon(tmp_path, prefix=(*TRACE, "-o", str(log), "--", *wrap))
    ledger = Ledger(sender="t01@src.test")
    messages = [
        ledger.make(
            ["r@x.test"],
            body=f"TOKEN-{seq:06d}-END\r\n".encode() + make_body(seq, 1500),
        )
        for seq in range(1, MESSAGES + 1)
    ]
    try:
        result = inject(ledger, messages, d.host, d.port, concurrency=5, per_connection=20)
    finally:
        target = _tracee_pid(d.pid)
        os.kill(target, signal.SIGTERM)
        assert d.proc.proc is not None
        d.proc.proc.wait(30)  # strace exits when its tracee has
        time.sleep(0.1)
    token_of: dict[str, str] = {}
    for mid, _env, body in read_spool(d.spool).messages:
        found = _TOKEN.search(body)
        assert found is not None, f"message {mid} has no token"
        token_of[str(mid)] = found.group(0).decode()

    def ack_token(ev: strace_check.Event) -> str | None:
        if ev.name != "write" or not ev.entry:
            return None
        m = _QUEUED.search(ev.args)
        if m is None:
            return None
        return token_of.get(m.group(1), f"UNKNOWN-ID-{m.group(1)}")

    text = _TIMESTAMP.sub(lambda m: m.group(1) or "", log.read_text(errors="replace"))
    events = [
        dataclasses.replace(ev, name="write") if ev.name in _SOCKET_WRITES else ev
        for ev in strace_check.parse(text)
    ]
    acks, problems = strace_check.check_durable_before_ack(events, str(d.spool), ack_token)
    syncs = sum(1 for ev in events if ev.name in ("fsync", "fdatasync") and ev.result == 0)
    return acks, problems, result.acked, syncs


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def test_250_follows_fsync_of_the_message(tmp_path: Path) -> None:
    _need("strace")
    acks, problems, acked, syncs = _run(tmp_path, ())
    print(
        f"T01: {acks} acks traced ({acked} acked by the client), {syncs} fsyncs,"
        f" {len(problems)} violations"
    )
    assert acked == MESSAGES
    assert acks == MESSAGES
    assert problems == []


def test_negative_control_eatmydata_is_detected(tmp_path: Path) -> None:
    _need("strace", "eatmydata")
    acks, problems, acked, syncs = _run(tmp_path, ("eatmydata",))
    print(
        f"T01 control: {acks} acks traced, {syncs} fsyncs,"
        f" {len(problems)} violations under eatmydata"
    )
    assert acked == MESSAGES
    assert acks == MESSAGES
    assert syncs == 0  # eatmydata turns fsync/fdatasync into no-ops: they leave the trace
    unsynced = [p for p in problems if "without an fsync" in p]
    assert len(unsynced) == MESSAGES  # … and every ack is flagged
