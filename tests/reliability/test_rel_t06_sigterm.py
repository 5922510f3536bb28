"""T06 (scaled): SIGTERM under load keeps the queue intact; open sessions get 421 4.3.2.

``sluice run --no-deliver`` takes 1,000 messages (10 smtplib sessions). Then, with ten
injectors still sending and fifteen extra sessions open (six idle after EHLO, six in the
middle of a transaction after RCPT, three half-way through a message body), the daemon gets
SIGTERM. Pass: every open session reads ``421 4.3.2`` and sees the connection close (the cut
bodies are not stored: phantom = 0); the daemon exits 0; every acknowledged message is in
the spool; after a restart (accepting mail again in < 10 s, measured from the spawn to the
250 of one new message) and a second stop, the spool holds exactly the same ids and
messages plus that one, and the restart's recovery log counts them all.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from tests.e2e.injectors import InjectResult, RawSmtpClient, inject
from tests.e2e.ledger import Ledger
from tests.reliability.rel_support import log_problems, read_spool, spool_deliveries, start_daemon

pytestmark = pytest.mark.interop

QUEUED = 1000
DURING = 2000
RESTART_WITHIN = 10.0
_RECOVERED = re.compile(r"recovered: (\d+) messages")


def test_sigterm_under_load_keeps_queue(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    ledger = Ledger(sender="t06@src.test")
    first = inject(
        ledger,
        ledger.make_many(QUEUED, ["r@x.test"], size=2000),
        d.host,
        d.port,
        concurrency=10,
        per_connection=100,
    )
    assert first.acked == QUEUED

    idle = [RawSmtpClient(d.host, d.port, timeout=20) for _ in range(6)]
    for c in idle:
        c.ehlo()
    mid = [RawSmtpClient(d.host, d.port, timeout=20) for _ in range(6)]
    for c in mid:
        c.ehlo()
        c.command("MAIL FROM:<mid@src.test>", 250)
        c.command("RCPT TO:<r@x.test>", 250)
    in_body = [RawSmtpClient(d.host, d.port, timeout=20) for _ in range(3)]
    for c in in_body:
        c.ehlo()
        c.command("MAIL FROM:<body@src.test>", 250)
        c.command("RCPT TO:<r@x.test>", 250)
        c.command("DATA", 354)
        c.send_raw(b"Subject: cut by the stop\r\n\r\nhalf a body\r\n")
    during: list[InjectResult] = []
    later = ledger.make_many(DURING, ["r@x.test"], size=2000)
    loader = threading.Thread(
        target=lambda: during.append(
            inject(ledger, later, d.host, d.port, concurrency=10, per_connection=20)
        )
    )
    loader.start()
    while len(ledger.acked_seqs()) < QUEUED + 100 and loader.is_alive():
        time.sleep(0.005)
    assert loader.is_alive(), "the load finished before SIGTERM"
    assert d.proc.proc is not None
    d.proc.proc.terminate()
    replies = []
    for c in idle + mid + in_body:
        replies.append(c.read_reply())
        assert c.sock.recv(1) == b""  # then the server closes
        c.close()
    assert d.proc.proc.wait(30) == 0
    loader.join(60)
    assert [(r.code, r.text.split()[0]) for r in replies] == [(421, "4.3.2")] * 15
    before = read_spool(d.spool)
    report = ledger.check(spool_deliveries(before))
    assert report.acked_lost == 0
    assert report.truncated == 0
    assert report.phantom == 0
    assert before.quarantined == 0

    # Restart: accepting again (one message taken) in < 10 s from the spawn.
    t0 = time.monotonic()
    d.proc.start()
    with RawSmtpClient(d.host, d.port) as c:
        c.ehlo()
        reply, _ = c.send_message("after@src.test", ["r@x.test"], b"Subject: after\r\n\r\nx\r\n")
        c.quit()
    restart_s = time.monotonic() - t0
    assert reply.code == 250
    assert d.proc.stop() == 0
    after = read_spool(d.spool)
    recovered = [int(n) for n in _RECOVERED.findall(d.log())]
    print(
        f"T06: {len(before.messages)} queued at SIGTERM ({report.acked} acked,"
        f" {during[0].acked} during the stop's load); restart → 250 in {restart_s:.2f}s;"
        f" recovered counts {recovered}"
    )
    assert restart_s < RESTART_WITHIN
    old = {mid: (env, body) for mid, env, body in before.messages}
    new = {mid: (env, body) for mid, env, body in after.messages}
    added = sorted(set(new) - set(old))
    assert len(added) == 1
    assert new[added[0]][0].sender == "after@src.test"
    assert {k: new[k] for k in old} == old  # same ids, envelopes and bytes; none lost
    assert recovered[-1] == len(before.messages)
    assert log_problems(d.log()) == []
