"""T02 (scaled): kill -9 the daemon ten times under load; no acknowledged message is lost.

20 smtplib injectors (threads, 10 messages per session) send 3,000 ledger messages of
1–200 kB (log-uniform, seeded) to ``sluice run --no-deliver``. A controller kills the daemon
with SIGKILL ten times, each when the acknowledged count passes a seeded random threshold
(plus a seeded random delay), and restarts it at once; injectors retry whatever was not
acknowledged. After the last restart the load finishes, the daemon stops with SIGTERM, and
the spool (opened with SqliteSpool and recovered, as the daemon would) is the "receiver":
acked_lost = 0, truncated = 0, phantom = 0, dup ≤ sessions × kills, no quarantine and no
corruption reported at any start-up.
"""

from __future__ import annotations

import math
import random
import threading
import time
from pathlib import Path

import pytest
from tests.e2e.injectors import InjectResult, inject
from tests.e2e.ledger import Ledger, TestMessage
from tests.reliability.rel_support import log_problems, read_spool, spool_deliveries, start_daemon

pytestmark = pytest.mark.interop

SEED = 20261128
MESSAGES = 4000
INJECTORS = 20
KILLS = 10
MIN_SIZE, MAX_SIZE = 1_000, 200_000


def _sizes(rng: random.Random, n: int) -> list[int]:
    lo, hi = math.log(MIN_SIZE), math.log(MAX_SIZE)
    return [int(math.exp(rng.uniform(lo, hi))) for _ in range(n)]


def test_kill9_ten_times_under_load_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ledger = Ledger(sender="t02@src.test", path=tmp_path / "ledger.csv")
    messages: list[TestMessage] = [
        ledger.make([f"r{i % 7}@x.test"], size=size) for i, size in enumerate(_sizes(rng, MESSAGES))
    ]
    thresholds = sorted(rng.sample(range(MESSAGES // 20, MESSAGES * 17 // 20), KILLS))
    delays = [rng.uniform(0.0, 0.25) for _ in range(KILLS)]

    d = start_daemon(tmp_path)
    result: list[InjectResult] = []

    def load() -> None:
        result.append(
            inject(
                ledger,
                messages,
                d.host,
                d.port,
                concurrency=INJECTORS,
                per_connection=10,
                retry=True,
                max_attempts=10_000,
                retry_delay=0.1,
                timeout=30,
            )
        )

    loader = threading.Thread(target=load, name="t02-load")
    loader.start()
    kills_done = 0
    try:
        for threshold, delay in zip(thresholds, delays, strict=True):
            while len(ledger.acked_seqs()) < threshold and loader.is_alive():
                time.sleep(0.01)
            assert loader.is_alive(), "load finished before all kills were done"
            time.sleep(delay)
            d.proc.kill9()
            kills_done += 1
            d.proc.start()
        loader.join(600)
        assert not loader.is_alive()
    finally:
        ledger.close()
        if d.proc.running:
            assert d.proc.stop() == 0
    contents = read_spool(d.spool)
    report = ledger.check(spool_deliveries(contents))
    stats = result[0]
    print(
        f"T02: kills={kills_done} attempts={stats.attempts} errors={stats.errors}"
        f" unacked={stats.unacked} stored={len(contents.messages)}"
        f" quarantined={contents.quarantined}"
    )
    assert kills_done == KILLS
    assert stats.acked == MESSAGES
    assert stats.unacked == 0
    assert report.acked == MESSAGES
    assert report.acked_lost == 0, report.lost_pairs[:20]
    assert report.truncated == 0
    assert report.phantom == 0
    assert report.dup <= INJECTORS * KILLS
    assert contents.quarantined == 0
    assert log_problems(d.log()) == []
    assert d.log().count("sluice ready") == KILLS + 1
