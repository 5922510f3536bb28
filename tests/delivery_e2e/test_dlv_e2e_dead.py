"""T30 (scaled) through the real daemon: a dead destination causes no retry storm and does not
delay anybody else.

500 messages go to dead.test (nothing listens on 127.0.0.9: every connection is refused) while
a steady flow goes to ok.test (Postfix). SYNs to dead.test are counted on the wire
(AF_PACKET on lo); while it is down, no retry wave may hold more than ``max-smtp-out``
attempts, and ok.test's latency (injection 250 → Postfix's Maildir) stays low. Then an
smtp-sink comes up on dead.test's address: the queue drains, never with more than
``max-smtp-out`` concurrent connections.
"""

from __future__ import annotations

import threading
import time

import pytest
from tests.delivery_e2e.dlv_e2e_support import (
    ConnSampler,
    SynCounter,
    World,
    percentile,
    wait_for,
    waves,
)
from tests.e2e.dnszones import RECEIVER_ADDRS
from tests.e2e.postfix_peer import PostfixReceiver

pytestmark = pytest.mark.interop

DEAD = RECEIVER_ADDRS["dead"]
DEAD_MESSAGES = 500
MAX_SMTP_OUT = 5
RETRY_AFTER = 3.0
#: Seconds dead.test stays down after the first injection.
DOWN_FOR = 13.0
#: One ok.test message every FLOW_EVERY seconds for the whole test.
FLOW_EVERY = 0.5
P95_LIMIT = 5.0


def test_t30_dead_destination_no_storm_no_head_of_line_blocking(
    world: World, postfix_receiver: PostfixReceiver, syn_counter: SynCounter
) -> None:
    world.start_sluice(
        domains={
            "*": {"retry-after": "2s", "bounce-after": "10m"},
            "dead.test": {"max-smtp-out": MAX_SMTP_OUT, "retry-after": f"{RETRY_AFTER:.0f}s"},
        }
    )
    led = world.ledger
    flow: list[int] = []
    stop_flow = threading.Event()

    def steady_flow() -> None:
        i = 0
        while not stop_flow.is_set():
            m = led.make([f"flow{i}@ok.test"], size=800)
            world.inject([m])
            flow.append(m.seq)
            i += 1
            stop_flow.wait(FLOW_EVERY)

    flow_thread = threading.Thread(target=steady_flow, name="ok-flow", daemon=True)
    flow_thread.start()
    try:
        began = time.monotonic()
        dead_msgs = [led.make([f"r{i}@dead.test"], size=600) for i in range(DEAD_MESSAGES)]
        result = world.inject(dead_msgs, concurrency=4, per_connection=50)
        assert result.acked == DEAD_MESSAGES
        injected_in = time.monotonic() - began
        time.sleep(max(0.0, DOWN_FOR - (time.monotonic() - began)))

        # dead.test comes back.
        up_at = time.monotonic()
        with ConnSampler(DEAD, world.port) as sampler:
            sink = world.make_sink(DEAD)
            wait_for(lambda: len(sink.deliveries()) >= DEAD_MESSAGES, 60, "dead.test queue drained")
            drained_in = time.monotonic() - up_at
    finally:
        stop_flow.set()
        flow_thread.join(30)

    # The steady flow was never held up by the dead queue.
    wait_for(lambda: len(postfix_receiver.messages()) >= len(flow), 15, "the ok.test flow")
    acked_at = {seq: led.replies(seq)[-1][1] for seq in flow}
    latencies = [
        m.path.stat().st_mtime - acked_at[d.seq]
        for m in postfix_receiver.messages()
        for d in m.deliveries("postfix")
        if d.seq in acked_at
    ]
    assert len(latencies) == len(flow)
    p95 = percentile(latencies, 95)

    down_syns = [s.at for s in syn_counter.syns(DEAD, world.port, since=began, until=up_at)]
    wave_sizes = [len(w) for w in waves(down_syns, gap=1.0)]
    report = led.check([*postfix_receiver.deliveries(), *sink.deliveries()])
    print(
        f"T30: injected {DEAD_MESSAGES} in {injected_in:.1f}s; down {DOWN_FOR:.0f}s:"
        f" {len(down_syns)} SYNs in waves {wave_sizes}; ok.test flow {len(flow)} msgs,"
        f" p95 {p95:.2f}s max {max(latencies):.2f}s; drained in {drained_in:.1f}s,"
        f" peak {sampler.peak} connections"
    )
    assert (report.acked_lost, report.dup, report.phantom) == (0, 0, 0)
    assert p95 < P95_LIMIT
    assert down_syns, "dead.test was never tried"
    assert max(wave_sizes) <= MAX_SMTP_OUT, wave_sizes
    # Waves come at most once per retry-after (jitter ±10 %), not continuously.
    assert len(wave_sizes) <= DOWN_FOR / (RETRY_AFTER * 0.9) + 1, wave_sizes
    assert 1 <= sampler.peak <= MAX_SMTP_OUT
