"""Every rate and connection limit of the planner, on simulated time (fake clock only)."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from shaping_net import Net, max_in_window

from sluice.sched import (
    CloseReason,
    Connect,
    Deliver,
    QueueSettings,
    QueueThrottles,
    RateLimit,
    Result,
    Scheduler,
    SourceIp,
    Transaction,
    Wake,
)
from sluice.sched.throttle import LATENESS_FRACTION, Gcra

Q = "example.com/v1"
T0 = 1_800_000_000.0


def make(settings: QueueSettings, **kw: int) -> Scheduler:
    return Scheduler(rng=random.Random(1), settings_for=lambda _q: settings, **kw)


def fill(net: Net, queue: str, n: int, start: int = 0, **kw: int) -> None:
    for i in range(start, start + n):
        net.add(queue, i, **kw)  # type: ignore[arg-type]


# ---- max-msg-rate -----------------------------------------------------------------------


def test_max_msg_rate_is_smooth_and_exact_over_an_hour() -> None:
    settings = QueueSettings(max_smtp_out=20, max_msg_rate=RateLimit.per_hour(5000))
    net = Net(make(settings), start=T0, txn_delay=0.3)
    fill(net, Q, 6000)
    net.run_until(T0 + 3600.0 - 1e-3)
    times = net.log.deliver_times()
    assert 4995 <= len(times) <= 5000  # one every 0.72 s, wake-ups exact to 1/1024 s
    assert max_in_window(times, 1.0) <= 2  # 1 + 1.0/0.72: no burst in the first second
    assert max_in_window(times, 60.0) <= 1 + 60 / 0.72
    # A gap may be shorter by the wake-up lateness the limiter forgives, never more.
    assert min(b - a for a, b in pairwise(times)) >= 0.72 * (1 - LATENESS_FRACTION) - 1e-9
    # The rate, not the connections, is the bottleneck: one connection suffices.
    assert net.peak[Q] == 1


def test_max_msg_rate_counts_attempted_recipients() -> None:
    settings = QueueSettings(max_msg_rate=RateLimit(count=1, seconds=10))
    net = Net(make(settings), start=T0, connect_delay=0.0, txn_delay=0.1)
    net.add(Q, 1, rcpts=(0, 1, 2))
    net.add(Q, 2)
    net.run_until(T0 + 29.0)
    assert [(t - T0, n) for t, _, _, n in net.log.delivers] == [(0.0, 3)]
    net.run_until(T0 + 31.0)
    assert [(t - T0, n) for t, _, _, n in net.log.delivers] == [(0.0, 3), (30.0, 1)]


def test_a_slow_destination_gets_more_connections_until_the_rate_is_reached() -> None:
    # 5000/h with 10 s per transaction needs about 14 connections to keep up.
    settings = QueueSettings(max_smtp_out=20, max_msg_rate=RateLimit.per_hour(5000))
    net = Net(make(settings), start=T0, txn_delay=10.0)
    fill(net, Q, 3000)
    net.run_until(T0 + 1800.0)
    assert 13 <= net.peak[Q] <= 20
    # Each new connection starts when the rate allows a message and none is free, and costs
    # a connect delay: the ramp-up loses a few messages, never exceeds the rate.
    assert 2480 <= len(net.log.delivers) <= 2500
    assert max_in_window(net.log.deliver_times(), 60.0) <= 1 + 60 / 0.72


def test_max_msg_per_connection_and_rate_together() -> None:
    settings = QueueSettings(
        max_smtp_out=3, max_msg_per_connection=2, max_msg_rate=RateLimit(count=1, seconds=1)
    )
    net = Net(make(settings), start=T0, txn_delay=0.2)
    fill(net, Q, 10)
    net.run_until(T0 + 100.0)
    assert len(net.log.delivers) == 10
    assert all(len(w) <= 2 for w in net.work.values())
    assert min(b - a for a, b in pairwise(net.log.deliver_times())) >= 1.0 - 1e-9


# ---- max-connect-rate, rampup -----------------------------------------------------------


def test_max_connect_rate_spaces_new_connections() -> None:
    settings = QueueSettings(max_smtp_out=10, max_connect_rate=RateLimit(count=3, seconds=300))
    net = Net(
        make(settings, max_batch=1), start=T0, txn_delay=1000.0
    )  # slow: wants many connections
    fill(net, Q, 50)
    net.run_until(T0 + 1000.0)
    times = net.log.connect_times()
    assert len(times) == 10  # 1000 s / 100 s, then the cap of 10
    assert min(b - a for a, b in pairwise(times)) >= 100.0 - 1e-9


def test_smtp_out_rampup_interval_is_the_least_wait_between_connections() -> None:
    settings = QueueSettings(max_smtp_out=5, smtp_out_rampup_interval=30.0)
    net = Net(make(settings, max_batch=1), start=T0, txn_delay=500.0)
    fill(net, Q, 20)
    net.run_until(T0 + 200.0)
    assert [t - T0 for t in net.log.connect_times()] == [0.0, 30.0, 60.0, 90.0, 120.0]


def test_backoff_connect_rate_and_normal_connect_rate_are_separate_settings() -> None:
    from sluice.sched import BackoffSettings, QueueMode

    settings = QueueSettings(
        max_smtp_out=10,
        max_connect_rate=RateLimit(count=1, seconds=10),
        backoff=BackoffSettings(max_connect_rate=RateLimit(count=1, seconds=100)),
    )
    sched = make(settings, max_batch=1)
    net = Net(sched, start=T0, txn_delay=10_000.0)
    fill(net, Q, 50)
    net.run_until(T0 + 25.0)
    assert len(net.log.connects) == 3  # 0, 10, 20
    sched.set_mode(Q, QueueMode.BACKOFF, net.now)
    net.run_until(T0 + 250.0)
    later = [t - T0 for t in net.log.connect_times() if t > T0 + 25.0]
    assert later == [120.0, 220.0]  # 100 s after the last one: the new rate applies at once


# ---- max-data-volume-rate ---------------------------------------------------------------


def test_max_data_volume_rate_counts_message_bytes() -> None:
    settings = QueueSettings(max_data_volume_rate=RateLimit(count=1_000_000, seconds=60))
    net = Net(make(settings), start=T0, connect_delay=0.0, txn_delay=0.1)
    fill(net, Q, 10, size=300_000)
    net.run_until(T0 + 120.0 - 1e-3)
    times = [t - T0 for t in net.log.deliver_times()]
    # 300 kB each at 1 MB/min: one every 18 s.
    assert times == pytest.approx([0.0, 18.0, 36.0, 54.0, 72.0, 90.0, 108.0])


def test_external_volume_throttle_is_asked_per_byte() -> None:
    asked: list[int] = []

    class Recorder:
        def try_take(self, now: float, n: int) -> float | None:
            asked.append(n)
            return None

    sched = make(QueueSettings())
    sched.configure(Q, QueueSettings(), QueueThrottles(volume=(Recorder(),)))
    net = Net(sched, start=T0)
    net.add(Q, 1, size=1234)
    net.add(Q, 2, size=99)
    net.run_until(T0 + 10.0)
    assert asked == [1234, 99]


# ---- source IPs -------------------------------------------------------------------------


def test_sources_rotate_and_are_named_in_connect() -> None:
    settings = QueueSettings(
        max_smtp_out=4, sources=(SourceIp(address="10.0.0.1"), SourceIp(address="10.0.0.2"))
    )
    net = Net(make(settings), start=T0, txn_delay=100.0)
    fill(net, Q, 10)
    net.run_until(T0 + 1.0)
    assert [s for _, _, _, s in net.log.connects] == ["10.0.0.1", "10.0.0.2"] * 2


def test_source_ip_max_smtp_out_is_shared_by_every_queue_using_the_source() -> None:
    src = SourceIp(address="10.0.0.1", max_smtp_out=3)
    settings = QueueSettings(max_smtp_out=10, sources=(src,))
    sched = make(settings)
    net = Net(sched, start=T0, txn_delay=50.0)
    fill(net, "a.example/v1", 20)
    fill(net, "b.example/v2", 20, start=100)
    net.run_until(T0 + 10.0)
    assert net.peak_source["10.0.0.1"] == 3
    net.run_until(T0 + 2000.0)
    assert net.log.delivered == 40  # waiting queues were woken when a slot freed
    assert net.peak_source["10.0.0.1"] == 3


def test_source_groups_keep_limits_apart() -> None:
    def settings_for(q: str) -> QueueSettings:
        group = q.split("/", maxsplit=1)[0]
        return QueueSettings(sources=(SourceIp(address="10.0.0.1", group=group, max_smtp_out=2),))

    sched = Scheduler(rng=random.Random(1), settings_for=settings_for)
    net = Net(sched, start=T0, txn_delay=50.0)
    fill(net, "a.example/v1", 10)
    fill(net, "b.example/v1", 10, start=100)
    net.run_until(T0 + 1.0)
    assert net.peak["a.example/v1"] == 2
    assert net.peak["b.example/v1"] == 2


def test_source_ip_max_msg_rate_applies_across_queues() -> None:
    src = SourceIp(address="10.0.0.1", max_msg_rate=RateLimit(count=1, seconds=2))
    sched = make(QueueSettings(sources=(src,)))
    net = Net(sched, start=T0, txn_delay=0.1)
    fill(net, "a.example/v1", 10)
    fill(net, "b.example/v1", 10, start=100)
    net.run_until(T0 + 40.0 - 1e-3)
    times = net.log.deliver_times()
    assert len(times) == 20
    assert min(b - a for a, b in pairwise(sorted(times))) >= 2.0 - 1e-9


def test_a_throttled_source_does_not_hold_back_the_queues_other_source() -> None:
    slow = SourceIp(address="10.0.0.1", max_msg_rate=RateLimit(count=1, seconds=60))
    fast = SourceIp(address="10.0.0.2")
    sched = make(QueueSettings(max_smtp_out=2, sources=(slow, fast)))
    net = Net(sched, start=T0, txn_delay=0.5)
    fill(net, Q, 30)
    net.run_until(T0 + 30.0)
    by_source: dict[str | None, int] = {}
    src_of = {cid: s for _, _, cid, s in net.log.connects}
    for _, _, cid, _ in net.log.delivers:
        by_source[src_of[cid]] = by_source.get(src_of[cid], 0) + 1
    assert by_source.get("10.0.0.1", 0) == 1
    assert by_source["10.0.0.2"] == 29


def test_source_ip_max_connect_rate() -> None:
    src = SourceIp(address="10.0.0.1", max_connect_rate=RateLimit(count=1, seconds=20))
    sched = make(QueueSettings(max_smtp_out=5, sources=(src,)), max_batch=1)
    net = Net(sched, start=T0, txn_delay=1000.0)
    fill(net, Q, 10)
    net.run_until(T0 + 70.0)
    assert [t - T0 for t in net.log.connect_times()] == [0.0, 20.0, 40.0, 60.0]


# ---- total-max-smtp-out, queue-priority, idle timeout ------------------------------------


def test_priority_queues_get_the_global_slots_first_even_when_throttled() -> None:
    def settings_for(q: str) -> QueueSettings:
        if q.startswith("reset"):
            return QueueSettings(queue_priority=90, max_smtp_out=5)
        return QueueSettings(
            queue_priority=10, max_smtp_out=5, max_msg_rate=RateLimit(count=100, seconds=1)
        )

    sched = Scheduler(rng=random.Random(1), settings_for=settings_for, total_max_smtp_out=4)
    net = Net(sched, start=T0, txn_delay=20.0)
    fill(net, "bulk.example/v", 200)
    net.run_until(T0 + 1.0)
    assert net.conns("bulk.example/v") == 4
    fill(net, "reset.example/v", 3, start=1000)
    net.run_until(T0 + 45.0)
    first_reset = min(t for t, q, _, _ in net.log.connects if q.startswith("reset"))
    later_bulk = [t for t, q, _, _ in net.log.connects if q.startswith("bulk") and t > T0 + 1]
    assert first_reset == pytest.approx(T0 + 20.1)  # the first slot that freed
    assert all(t >= first_reset for t in later_bulk)
    assert sum(1 for _, q, _, _ in net.log.delivers if q.startswith("reset")) == 3
    assert max(net.peak.values()) <= 4


def test_idle_connections_are_held_through_short_throttle_waits_only() -> None:
    settings = QueueSettings(max_msg_rate=RateLimit(count=1, seconds=5))
    net = Net(make(settings), start=T0, txn_delay=0.1)
    fill(net, Q, 4)
    net.run_until(T0 + 30.0)
    assert len(net.log.connects) == 1  # a 5 s wait keeps the connection (HOLD 10 s)
    slow = QueueSettings(max_msg_rate=RateLimit(count=1, seconds=60))
    net = Net(make(slow), start=T0, connect_delay=0.0, txn_delay=0.1)
    fill(net, Q, 3)
    net.run_until(T0 + 200.0)
    assert len(net.log.connects) == 3  # a 60 s wait: close, reconnect when due
    assert [c.reason for _, c in net.log.closes] == [CloseReason.IDLE] * 3
    # No connection is opened while the queue waits for its rate (no open/close churn).
    assert [t - T0 for t in net.log.connect_times()] == [0.0, 60.0, 120.0]


def test_connection_idle_timeout_is_capped_at_ten_minutes() -> None:
    assert QueueSettings(connection_idle_timeout=3600.0).connection_idle_timeout == 600.0


# ---- max-cpu-usage: holding new connections ---------------------------------------------


def test_hold_connections_stops_new_connections_until_released() -> None:
    sched = make(QueueSettings(max_smtp_out=2))
    sched.hold_connections(True)
    sched.add(Q, 1, [0], T0, T0)
    assert [a for a in sched.plan(T0) if isinstance(a, Connect)] == []
    sched.hold_connections(False)
    assert [a for a in sched.plan(T0 + 1) if isinstance(a, Connect)] == [
        Connect(queue=Q, connection_id=1)
    ]


def test_hold_keeps_open_connections_working() -> None:
    sched = make(QueueSettings(max_smtp_out=1, connection_idle_timeout=60.0))
    sched.add(Q, 1, [0], T0, T0)
    (c,) = [a for a in sched.plan(T0) if isinstance(a, Connect)]
    sched.connection_opened(c.connection_id, T0)
    (d,) = [a for a in sched.plan(T0) if isinstance(a, Deliver)]
    from sluice.sched import Outcome

    sched.report(c.connection_id, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.delivered())], T0)
    sched.hold_connections(True)
    sched.add(Q, 2, [0], T0 + 1, T0 + 1)
    actions = sched.plan(T0 + 1)
    assert [a.transactions for a in actions if isinstance(a, Deliver)] == [
        (Transaction(msg_id=2, rcpts=(0,), attempts=0),)
    ]
    assert d.connection_id == c.connection_id


def test_wake_times_are_precise_for_rate_limits() -> None:
    sched = make(QueueSettings(max_msg_rate=RateLimit.per_hour(5000), connection_idle_timeout=5))
    sched.add(Q, 1, [0], T0, T0)
    sched.add(Q, 2, [0], T0, T0)
    (c,) = [a for a in sched.plan(T0) if isinstance(a, Connect)]
    sched.connection_opened(c.connection_id, T0)
    sched.plan(T0)
    from sluice.sched import Outcome

    sched.report(c.connection_id, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.delivered())], T0)
    wakes = [a.at for a in sched.plan(T0 + 0.1) if isinstance(a, Wake)]
    assert wakes
    assert T0 + 0.72 <= wakes[0] < T0 + 0.72 + 1 / 1024 + 1e-9


def test_gcra_objects_can_be_shared_as_external_throttles() -> None:
    shared = Gcra(RateLimit(count=1, seconds=3))
    sched = make(QueueSettings())
    for q in ("a.example/v", "b.example/v"):
        sched.configure(q, QueueSettings(), QueueThrottles(message=(shared,)))
    net = Net(sched, start=T0, txn_delay=0.1)
    fill(net, "a.example/v", 3)
    fill(net, "b.example/v", 3, start=10)
    net.run_until(T0 + 18.0 - 1e-3)
    times = sorted(net.log.deliver_times())
    assert len(times) == 6
    assert min(b - a for a, b in pairwise(times)) >= 3.0 - 1e-9
