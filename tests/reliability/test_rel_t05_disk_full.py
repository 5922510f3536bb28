"""T05 (scaled): a full disk makes injection fail cleanly, and it resumes by itself.

The spool lives on an 8 MiB tmpfs that also holds a 2 MiB filler file. Four raw-socket
injectors send 40 kB ledger messages, one per session, until replies turn into 4xx, go on
for 10 s more, then the filler is deleted. Pass: every non-2xx reply (at MAIL or after the
dot) is ``452 4.3.1`` or ``451 4.3.0``; the daemon stays up; a 250 comes back within 30 s of
the space returning; after a graceful stop the spool holds every acknowledged message intact
(acked_lost = 0, truncated = 0) and nothing that was refused (a failed store leaves no trace).
Skips when tmpfs cannot be mounted (needs root).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.injectors import RawSmtpClient
from tests.e2e.ledger import Ledger, TestMessage
from tests.reliability.rel_support import (
    Daemon,
    log_problems,
    read_spool,
    spool_deliveries,
    start_daemon,
)

pytestmark = pytest.mark.interop

TMPFS_SIZE = "8m"
FILLER = 2 * 1024 * 1024
MSG_SIZE = 40_000
INJECTORS = 4
KEEP_FULL = 10.0  # seconds of injection into a full disk (test plan: 60)
RESUME_WITHIN = 30.0
#: The only refusals a full or failing store may produce (docs/intake.md).
ALLOWED = {(452, "4.3.1"), (451, "4.3.0")}


@contextlib.contextmanager
def _tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class _Injector:
    """Sends one message per session and records every reply that ends a transaction."""

    def __init__(self, d: Daemon, ledger: Ledger) -> None:
        self.d = d
        self.ledger = ledger
        self.lock = threading.Lock()
        self.refusals: list[tuple[str, int, str]] = []
        self.other: list[str] = []
        self.acks: list[float] = []
        self.stop = threading.Event()

    def attempt(self, msg: TestMessage) -> None:
        try:
            with RawSmtpClient(self.d.host, self.d.port, timeout=20) as c:
                c.ehlo()
                mail = c.command(f"MAIL FROM:<{msg.sender}>")
                if mail.code != 250:
                    self._refused("MAIL", mail.code, mail.text)
                    return
                c.command(f"RCPT TO:<{msg.recipients[0]}>", 250)
                c.command("DATA", 354)
                c.send_raw(msg.data + b".\r\n")  # ledger bodies have no leading dots here
                reply = c.read_reply()
                self.ledger.record_reply(msg.seq, reply.code)
                if reply.code == 250:
                    with self.lock:
                        self.acks.append(time.monotonic())
                else:
                    self._refused("DOT", reply.code, reply.text)
                c.quit()
        except OSError as exc:
            with self.lock:
                self.other.append(f"connection: {exc!r}")

    def _refused(self, stage: str, code: int, text: str) -> None:
        with self.lock:
            self.refusals.append((stage, code, text))

    def run(self) -> None:
        while not self.stop.is_set():
            body = b"no dots here\r\n" * (MSG_SIZE // 14)
            self.attempt(self.ledger.make(["r@x.test"], body=body))


def test_disk_full_refuses_cleanly_and_recovers(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "fs") as fs:
        filler = fs / "filler"
        filler.write_bytes(os.urandom(FILLER))
        d = start_daemon(tmp_path, spool=fs / "spool")
        ledger = Ledger(sender="t05@src.test")
        inj = _Injector(d, ledger)
        threads = [threading.Thread(target=inj.run) for _ in range(INJECTORS)]
        try:
            for t in threads:
                t.start()
            deadline = time.monotonic() + 120
            while not inj.refusals and time.monotonic() < deadline:
                time.sleep(0.05)
            assert inj.refusals, "the disk never filled up"
            full_at = time.monotonic()
            acks_before_full = len(ledger.acked_seqs())
            time.sleep(KEEP_FULL)
            assert d.proc.running, "the daemon died on a full disk"
            with inj.lock:
                acks_while_full = sum(1 for t in inj.acks if full_at < t <= time.monotonic())
            filler.unlink()
            freed_at = time.monotonic()
            while time.monotonic() - freed_at < RESUME_WITHIN + 5:
                with inj.lock:
                    resumed = [t for t in inj.acks if t > freed_at]
                if resumed:
                    break
                time.sleep(0.05)
            inj.stop.set()
            for t in threads:
                t.join(30)
            assert resumed, "injection did not resume after space returned"
            resume_s = resumed[0] - freed_at
            print(
                f"T05: full after {acks_before_full} acks; {len(inj.refusals)} refusals"
                f" in {freed_at - full_at:.1f}s; resumed {resume_s:.2f}s after freeing space;"
                f" acks while full {acks_while_full}"
            )
            assert resume_s < RESUME_WITHIN
            assert d.proc.running
        finally:
            inj.stop.set()
            ledger.close()
            if d.proc.running:
                assert d.proc.stop() == 0
        contents = read_spool(d.spool)
    kinds = Counter(
        (stage, code, text.split()[0] if text else "") for stage, code, text in inj.refusals
    )
    print(f"T05 refusals: {dict(kinds)}")
    bad = [r for r in inj.refusals if (r[1], r[2].split()[0] if r[2] else "") not in ALLOWED]
    assert bad == []
    assert inj.other == []
    report = ledger.check(spool_deliveries(contents))
    assert report.acked_lost == 0
    assert report.truncated == 0
    assert report.phantom == 0
    assert report.unacked_delivered == 0  # a refused message left nothing behind
    assert contents.quarantined == 0
    problems = [p for p in log_problems(d.log()) if "quarantin" in p or "Traceback" in p]
    assert problems == []
