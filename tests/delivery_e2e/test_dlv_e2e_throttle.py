"""T31-lite through the real daemon: per-queue limits hold on the wire.

``max-smtp-out`` is never exceeded, sampled every 5 ms from /proc/net/tcp while 500 messages
drain through connections that ``max-msg-per-connection`` keeps recycling; ``max-msg-rate``
spaces deliveries evenly (docs: at most ``burst + W·rate`` in any window of W seconds).
"""

from __future__ import annotations

import time

import pytest
from tests.delivery_e2e.dlv_e2e_support import ConnSampler, World, wait_for
from tests.e2e.dnszones import RECEIVER_ADDRS
from tests.e2e.peers import SmtpSink

pytestmark = pytest.mark.interop

SINK = RECEIVER_ADDRS["sink"]
LIMIT = 3
MESSAGES = 500
RATE = 10  # messages per second
RATED_MESSAGES = 40


def test_t31_lite_max_smtp_out_holds_at_every_sample(world: World, smtp_sink: SmtpSink) -> None:
    world.start_sluice(domains={"sink.test": {"max-smtp-out": LIMIT, "max-msg-per-connection": 20}})
    msgs = [world.ledger.make([f"c{i}@sink.test"], size=1000) for i in range(MESSAGES)]
    with ConnSampler(SINK, world.port, interval=0.005) as sampler:
        assert world.inject(msgs, concurrency=4, per_connection=50).acked == MESSAGES
        wait_for(lambda: len(smtp_sink.deliveries()) >= MESSAGES, 60, "the queue drained")
    counts = [n for _, n in sampler.samples]
    over = [n for n in counts if n > LIMIT]
    print(f"T31-lite: {len(counts)} samples, peak {max(counts)} connections (limit {LIMIT})")
    assert over == [], f"{len(over)} of {len(counts)} samples above max-smtp-out {LIMIT}"
    assert max(counts) >= 2, "the queue never used more than one connection"
    report = world.ledger.check(smtp_sink.deliveries())
    assert (report.acked_lost, report.dup, report.phantom) == (0, 0, 0)
    assert {t.client for t in smtp_sink.transactions()} == {"127.0.0.1"}


def test_t31_lite_max_msg_rate_spaces_deliveries(world: World, smtp_sink: SmtpSink) -> None:
    world.start_sluice(domains={"sink.test": {"max-msg-rate": f"{RATE}/s"}})
    msgs = [world.ledger.make([f"r{i}@sink.test"], size=500) for i in range(RATED_MESSAGES)]
    assert world.inject(msgs, concurrency=2, per_connection=20).acked == RATED_MESSAGES
    seen: list[float] = []

    def poll() -> bool:
        now = time.monotonic()
        seen.extend([now] * (len(smtp_sink.deliveries()) - len(seen)))
        return len(seen) >= RATED_MESSAGES

    wait_for(poll, 30, "all rated deliveries", interval=0.02)
    span = seen[-1] - seen[0]
    # Largest number of deliveries seen within any one second (polling adds 20 ms of blur).
    densest = max(sum(1 for t in seen if s <= t < s + 1.0) for s in seen)
    print(f"T31-lite: {RATED_MESSAGES} messages at {RATE}/s took {span:.1f}s; densest 1s {densest}")
    assert span >= (RATED_MESSAGES - 2) / RATE
    assert span <= 2 * RATED_MESSAGES / RATE
    assert densest <= 1 + RATE + 1
