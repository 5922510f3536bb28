"""Behaviour over simulated days on the fake clock: expiry, dead destinations, retry storms,
recovery after a restart (test-plan §4 and T30)."""

from __future__ import annotations

import random
from collections import Counter
from itertools import pairwise

from sched_driver import Driver, by_queue

from sluice.clock import FakeClock
from sluice.sched import (
    BounceReason,
    Connect,
    FixedRandom,
    Outcome,
    QueueSettings,
    Result,
    Scheduler,
    Scope,
    Transaction,
)

DAY = 86400.0
REFUSED = Outcome.transient("connection refused", Scope.SITE)


def always_defer(_q: str, txn: Transaction, _now: float) -> list[Result]:
    return [
        Result(msg_id=txn.msg_id, rcpts=txn.rcpts, outcome=Outcome.transient("450 4.2.0 later"))
    ]


def attempt_times(d: Driver, msg_id: int) -> list[float]:
    return [t for t, _q, m, _r in d.ledger.attempts if m == msg_id]


def test_always_deferring_destination_bounces_at_four_days_with_exact_spacing() -> None:
    settings = QueueSettings(
        retry_after=(600.0, 1200.0, 3600.0), min_retry_interval=300.0, bounce_after=4 * DAY
    )
    sched = Scheduler(rng=FixedRandom(0.5), settings_for=lambda _q: settings)  # no jitter
    d = Driver(sched, FakeClock(start_wall=1_800_000_000.0), deliver=always_defer)
    t0 = d.now
    d.add("defer.test/v", 1, (0,))
    d.run_until(t0 + 5 * DAY)
    times = attempt_times(d, 1)
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps[:3] == [600.0, 1200.0, 3600.0]
    assert set(gaps[2:]) == {3600.0}
    assert times[-1] < t0 + 4 * DAY
    assert len(times) == 98  # t0, +10m, +30m, then hourly while younger than 4 days
    bounce = d.ledger.bounced[(1, 0)]
    assert bounce.reason is BounceReason.EXPIRED
    assert d.ledger.bounced_at[(1, 0)] == t0 + 4 * DAY
    assert len(d.ledger.defers) == 98  # the last one names the expiry as its "retry"
    assert d.ledger.defers[-1].next_attempt == t0 + 4 * DAY  # bounced at expiry, not later


def test_jittered_retries_keep_the_floor_and_the_spread() -> None:
    settings = QueueSettings(
        retry_after=(600.0, 3600.0), min_retry_interval=580.0, bounce_after=DAY, jitter=0.1
    )
    sched = Scheduler(rng=random.Random(42), settings_for=lambda _q: settings)
    d = Driver(sched, FakeClock(), deliver=always_defer)
    t0 = d.now
    for m in range(20):
        d.add("defer.test/v", m, (0,))
    d.run_until(t0 + 2 * DAY)
    for m in range(20):
        times = attempt_times(d, m)
        gaps = [b - a for a, b in pairwise(times)]
        assert 580.0 <= gaps[0] <= 661.0  # 600 ± 10 %, the floor lifts the low end
        assert all(3240.0 <= g <= 3961.0 for g in gaps[1:])  # 3600 ± 10 % (+1 s rounding)
        assert d.ledger.bounced[(m, 0)].reason is BounceReason.EXPIRED
        assert times[-1] < t0 + DAY


def test_retry_wave_is_spread_by_jitter() -> None:
    """1,000 deferrals made in the same second come back over ±10 % of the delay."""
    settings = QueueSettings(max_smtp_out=10, retry_after=(600.0,), jitter=0.1)
    sched = Scheduler(rng=random.Random(3), settings_for=lambda _q: settings, max_batch=100)
    d = Driver(sched, FakeClock(), deliver=always_defer)
    t0 = d.now
    for m in range(1000):
        d.add("busy.test/v", m, (0,))
    d.run_until(t0 + 900)
    second_wave = [t for t, _q, _m, _r in d.ledger.attempts if t > t0]
    assert len(second_wave) == 1000
    per_second = Counter(int(t) for t in second_wave)
    assert max(per_second.values()) <= 50  # no second holds more than 5 % of the retries
    assert min(second_wave) >= t0 + 540
    assert max(second_wave) <= t0 + 661


def test_dead_queue_costs_one_wave_then_single_probes_and_never_delays_a_healthy_one() -> None:
    """T30 on the fake clock: a destination that refuses every connection, beside a healthy
    one receiving a message every second; after 30 minutes the dead one comes back."""
    dead, ok = "dead.test/v", "ok.test/v"
    settings = QueueSettings(max_smtp_out=10, retry_after=(300.0, 600.0), jitter=0.1)
    sched = Scheduler(rng=random.Random(5), settings_for=lambda _q: settings)
    alive = {dead: False, ok: True}
    d = Driver(sched, FakeClock(), connect=lambda q: None if alive[q] else REFUSED)
    t0 = d.now
    for m in range(1000):
        d.add(dead, m, (0,))
    added: dict[int, float] = {}
    for second in range(1800):
        added[10_000 + second] = d.now
        d.add(ok, 10_000 + second, (0,))
        d.run_until(t0 + second + 1)
    # The healthy queue: every message handed over in the second it arrived.
    handed = {m: t for t, q, m, _ in d.ledger.attempts if q == ok}
    assert all(handed[m] == t for m, t in added.items())
    # The dead queue: at most max-smtp-out connection attempts in the first wave, then one
    # probe per retry wave, spaced by the retry list (jittered), and nobody penalised.
    dead_connects = by_queue(d.ledger.connects)[dead]
    assert sum(t == t0 for t in dead_connects) == 10
    probes = [t for t in dead_connects if t > t0]
    gaps = [b - a for a, b in pairwise([t0, *probes])]
    assert 270.0 <= gaps[0] <= 331.0
    assert all(540.0 <= g <= 661.0 for g in gaps[1:])
    assert len(probes) <= 1800 // 540 + 1
    assert not d.ledger.defers
    snap = sched.snapshot(dead)
    assert snap is not None
    assert snap.recipients == 1000
    assert snap.events[-1].text == "connection refused"
    # The destination comes back: the next probe opens and the queue drains within its limit.
    alive[dead] = True
    d.ledger.peak_conns.clear()
    d.run_until(d.now + 700)
    assert all((m, 0) in d.ledger.delivered for m in range(1000))
    assert d.ledger.peak_conns[dead] <= 10
    assert sum(d.ledger.delivered.values()) == 1000 + 1800  # each exactly once


def test_dead_queue_recipients_still_expire() -> None:
    settings = QueueSettings(max_smtp_out=2, retry_after=(3600.0,), bounce_after=DAY, jitter=0.0)
    sched = Scheduler(rng=FixedRandom(), settings_for=lambda _q: settings)
    d = Driver(sched, FakeClock(), connect=lambda _q: REFUSED)
    t0 = d.now
    for m in range(5):
        d.add("dead.test/v", m, (0,))
    d.run_until(t0 + 2 * DAY)
    assert {k: b.reason for k, b in d.ledger.bounced.items()} == {
        (m, 0): BounceReason.EXPIRED for m in range(5)
    }
    assert set(d.ledger.bounced_at.values()) == {t0 + DAY}  # at the probe failure at 24 h
    assert len(d.ledger.connects) == 2 + 24  # first wave, then an hourly probe
    assert sched.snapshot("dead.test/v").recipients == 0  # type: ignore[union-attr]


def test_recovered_deferred_mail_keeps_its_schedule() -> None:
    sched = Scheduler(rng=random.Random(9))
    now = 1_800_000_000.0
    sched.add("a.test/v", 1, [0], now - 3600, now, attempts=2, next_attempt=now + 1234.0)
    assert [a for a in sched.plan(now) if isinstance(a, Connect)] == []
    assert sched.snapshot("a.test/v").next_retry == now + 1234.0  # type: ignore[union-attr]
    assert [a for a in sched.plan(now + 1233.0) if isinstance(a, Connect)] == []
    assert len([a for a in sched.plan(now + 1234.0) if isinstance(a, Connect)]) == 1


def test_recovered_overdue_retries_are_spread_not_released_at_once() -> None:
    """After a restart, deferred mail whose retry time passed during the outage comes back
    over ``recovery_spread`` seconds; never-tried mail goes at once."""
    settings = QueueSettings(max_smtp_out=5)
    sched = Scheduler(rng=random.Random(1), settings_for=lambda _q: settings, recovery_spread=300)
    d = Driver(sched, FakeClock())
    now = d.now
    for m in range(1000):
        d.add("a.test/v", m, (0,), attempts=3, next_attempt=now - 500, arrival=now - 7200)
    d.add("a.test/v", 5000, (0,), arrival=now - 10)
    d.run_until(now + 400)
    times = {m: t for t, _q, m, _r in d.ledger.attempts}
    assert times[5000] == now
    spread = [times[m] for m in range(1000)]
    assert min(spread) >= now
    assert max(spread) <= now + 301
    assert max(Counter(int(t) for t in spread).values()) <= 50
    assert len(d.ledger.delivered) == 1001


def test_recovered_mail_past_bounce_after_bounces_at_once() -> None:
    sched = Scheduler(rng=FixedRandom(), settings_for=lambda _q: QueueSettings(bounce_after=DAY))
    now = 1_800_000_000.0
    (bounce,) = sched.add("a.test/v", 1, [0, 1], now - 2 * DAY, now, attempts=40)
    assert bounce.reason is BounceReason.EXPIRED  # type: ignore[union-attr]
    assert bounce.rcpts == (0, 1)  # type: ignore[union-attr]
