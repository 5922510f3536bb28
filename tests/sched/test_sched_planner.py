"""The scheduler's decisions: limits, per-recipient outcomes and scopes, operator commands."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

import pytest
from sched_driver import Driver

from sluice.clock import FakeClock
from sluice.sched import (
    BackoffSettings,
    Bounce,
    BounceReason,
    Close,
    CloseReason,
    Connect,
    Defer,
    Deliver,
    Delivered,
    EventType,
    FixedRandom,
    Outcome,
    QueueMode,
    QueueSettings,
    QueueThrottles,
    RateLimit,
    Removed,
    Result,
    Scheduler,
    SchedulerError,
    Scope,
    Transaction,
    Wake,
)

Q = "example.com/vmta1"
T = TypeVar("T")


def make(settings: QueueSettings | None = None, **kw: int) -> Scheduler:
    s = settings or QueueSettings(jitter=0.0)
    return Scheduler(rng=FixedRandom(), settings_for=lambda _q: s, **kw)


def of(actions: Sequence[object], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def open_one(sched: Scheduler, now: float) -> int:
    (connect,) = of(sched.plan(now), Connect)
    sched.connection_opened(connect.connection_id, now)
    return int(connect.connection_id)


# ---- the basic cycle ------------------------------------------------------------------


def test_new_mail_connects_delivers_and_closes_when_idle() -> None:
    sched = make()
    now = 1000.0
    sched.add(Q, 7, [0, 1], arrival=now, now=now)
    actions = sched.plan(now)
    assert actions == [Connect(queue=Q, connection_id=1)]
    sched.connection_opened(1, now)
    (deliver,) = of(sched.plan(now), Deliver)
    assert deliver == Deliver(
        queue=Q, connection_id=1, transactions=(Transaction(msg_id=7, rcpts=(0, 1), attempts=0),)
    )
    done = sched.report(1, [Result(msg_id=7, rcpts=(0, 1), outcome=Outcome.delivered())], now)
    assert done == [Delivered(queue=Q, msg_id=7, rcpts=(0, 1), text="250 ok")]
    assert sched.plan(now) == [Close(queue=Q, connection_id=1, reason=CloseReason.IDLE)]
    assert sched.connection_closed(1, now) == []
    assert sched.plan(now) == []
    snap = sched.snapshot(Q)
    assert snap is not None
    assert (snap.recipients, snap.connections) == (0, 0)


def test_idle_connection_waits_for_new_mail_within_idle_timeout() -> None:
    sched = make(QueueSettings(connection_idle_timeout=30.0))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    (deliver,) = of(sched.plan(1000.0), Deliver)
    sched.report(cid, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.delivered())], 1001.0)
    assert sched.plan(1001.0) == [Wake(at=1030.0)]  # a stale timer: harmless
    assert sched.plan(1030.0) == [Wake(at=1031.0)]
    sched.add(Q, 2, [0], 1010.0, 1010.0)
    (deliver,) = of(sched.plan(1010.0), Deliver)  # reuses the open connection
    assert deliver.connection_id == cid
    sched.report(cid, [Result(msg_id=2, rcpts=(0,), outcome=Outcome.delivered())], 1011.0)
    assert not of(sched.plan(1031.0), Close)  # idle since 1011 only
    assert of(sched.plan(1041.0), Close) == [
        Close(queue=Q, connection_id=cid, reason=CloseReason.IDLE)
    ]


# ---- limits ---------------------------------------------------------------------------


def test_max_smtp_out_caps_connections_per_queue() -> None:
    sched = make(QueueSettings(max_smtp_out=3))
    for i in range(100):
        sched.add(Q, i, [0], 1000.0, 1000.0)
    assert len(of(sched.plan(1000.0), Connect)) == 3
    assert of(sched.plan(1000.0), Connect) == []


def test_few_messages_open_few_connections() -> None:
    sched = make(QueueSettings(max_smtp_out=20))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    sched.add(Q, 2, [0], 1000.0, 1000.0)
    assert len(of(sched.plan(1000.0), Connect)) == 2


def test_max_msg_per_connection() -> None:
    sched = make(QueueSettings(max_smtp_out=1, max_msg_per_connection=3))
    d = Driver(sched, FakeClock())
    for i in range(10):
        d.add(Q, i)
    d.run_until(d.now + 60)
    assert len(d.ledger.delivered) == 10
    assert max(d.ledger.msgs_per_conn.values()) == 3
    assert len(d.ledger.connects) == 4  # 3 + 3 + 3 + 1
    assert sum(c.reason is CloseReason.MAX_MSG for c in d.ledger.closes) == 3


def test_a_rate_limited_queue_replaces_a_connection_closed_after_max_msg_at_once() -> None:
    # Two connections at 3,600/h (one message a second); the second opened only when the
    # rate allowed a message and the first was busy. When the first reaches
    # max-msg-per-connection its replacement opens in the same turn, even though the rate
    # has no message to spare right now: the queue keeps the concurrency it grew to.
    settings = QueueSettings(
        max_smtp_out=5, max_msg_per_connection=2, max_msg_rate=RateLimit.per_hour(3600)
    )
    sched = make(settings)
    for i in range(20):
        sched.add(Q, i, [0], 1000.0, 1000.0)
    first = open_one(sched, 1000.0)
    (d1,) = of(sched.plan(1000.0), Deliver)
    (connect,) = of(sched.plan(1001.0), Connect)  # the rate allows one more, first is busy
    second = connect.connection_id
    sched.connection_opened(second, 1001.0)
    of(sched.plan(1001.0), Deliver)
    (txn,) = d1.transactions
    sched.report(
        first, [Result(msg_id=txn.msg_id, rcpts=txn.rcpts, outcome=Outcome.delivered())], 1001.5
    )
    (d2,) = of(sched.plan(1002.0), Deliver)
    assert d2.connection_id == first
    (txn,) = d2.transactions
    done = sched.report(
        first, [Result(msg_id=txn.msg_id, rcpts=txn.rcpts, outcome=Outcome.delivered())], 1002.2
    )
    assert Close(queue=Q, connection_id=first, reason=CloseReason.MAX_MSG) in done
    actions = sched.plan(1002.2)  # the next message may go only at 1003.0
    assert len(of(actions, Connect)) == 1
    assert not of(actions, Deliver)


def test_max_errors_per_connection_closes_and_the_rest_goes_on_a_new_one() -> None:
    sched = make(QueueSettings(max_smtp_out=1, max_errors_per_connection=2), max_batch=5)
    now = 1000.0
    for i in range(5):
        sched.add(Q, i, [0], now, now)
    cid = open_one(sched, now)
    (deliver,) = of(sched.plan(now), Deliver)
    assert len(deliver.transactions) == 5
    fail = Outcome.permanent("550 5.1.1 no such user")
    actions = sched.report(cid, [Result(msg_id=0, rcpts=(0,), outcome=fail)], now)
    assert not of(actions, Close)
    actions = sched.report(cid, [Result(msg_id=1, rcpts=(0,), outcome=fail)], now)
    assert of(actions, Close) == [Close(queue=Q, connection_id=cid, reason=CloseReason.MAX_ERRORS)]
    sched.connection_closed(cid, now)  # messages 2..4 were not tried
    cid2 = open_one(sched, now)
    (deliver,) = of(sched.plan(now), Deliver)
    assert deliver.connection_id == cid2
    assert [t.msg_id for t in deliver.transactions] == [2, 3, 4]
    assert all(t.attempts == 0 for t in deliver.transactions)


def test_max_rcpt_per_message_splits_into_transactions() -> None:
    sched = make(QueueSettings(max_smtp_out=1, max_rcpt_per_message=2))
    sched.add(Q, 9, [0, 1, 2, 3, 4], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    (deliver,) = of(sched.plan(1000.0), Deliver)
    assert [t.rcpts for t in deliver.transactions] == [(0, 1), (2, 3), (4,)]
    results = [
        Result(msg_id=9, rcpts=t.rcpts, outcome=Outcome.delivered()) for t in deliver.transactions
    ]
    delivered = of(sched.report(cid, results, 1000.0), Delivered)
    assert sorted(r for d in delivered for r in d.rcpts) == [0, 1, 2, 3, 4]


def test_paused_queue_yields_no_delivery_until_resumed() -> None:
    sched = make()
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    sched.pause(Q, 1000.0)
    assert of(sched.plan(1000.0), Connect) == []
    assert sched.snapshot(Q).paused  # type: ignore[union-attr]
    sched.resume(Q, 1001.0)
    assert len(of(sched.plan(1001.0), Connect)) == 1


def test_pausing_closes_idle_connections_and_gives_no_more_work() -> None:
    sched = make(QueueSettings(connection_idle_timeout=60.0))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    sched.pause(Q, 1000.0)
    assert of(sched.plan(1000.0), Close) == [
        Close(queue=Q, connection_id=cid, reason=CloseReason.PAUSED)
    ]


def test_paused_by_configuration() -> None:
    sched = make(QueueSettings(paused=True))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    assert sched.plan(1000.0) == []


def test_priority_gets_connections_first_under_the_global_cap() -> None:
    high = QueueSettings(max_smtp_out=5, queue_priority=90)
    low = QueueSettings(max_smtp_out=5, queue_priority=10)
    sched = Scheduler(
        rng=FixedRandom(),
        settings_for=lambda q: high if q.startswith("reset") else low,
        total_max_smtp_out=4,
    )
    now = 1000.0
    for i in range(10):
        sched.add("news.example/v", 100 + i, [0], now, now)  # added first
    for i in range(3):
        sched.add("reset.example/v", i, [0], now, now)
    connects = of(sched.plan(now), Connect)
    assert [c.queue for c in connects] == ["reset.example/v"] * 3 + ["news.example/v"]
    assert sched.connections == 4
    # Another high-priority message: it gets the next free slot, ahead of the waiting queue.
    sched.add("reset.example/v", 50, [0], now, now)
    assert of(sched.plan(now), Connect) == []
    sched.connection_failed(connects[-1].connection_id, Outcome.transient("timeout"), now)
    (nxt,) = of(sched.plan(now), Connect)
    assert nxt.queue == "reset.example/v"


def test_starved_queue_gets_a_slot_when_one_frees() -> None:
    sched = make(QueueSettings(max_smtp_out=2), total_max_smtp_out=2)
    now = 1000.0
    sched.add("a/v", 1, [0], now, now)
    sched.add("a/v", 2, [0], now, now)
    sched.add("b/v", 3, [0], now, now)
    connects = of(sched.plan(now), Connect)
    assert [c.queue for c in connects] == ["a/v", "a/v"]
    sched.connection_opened(connects[0].connection_id, now)
    sched.plan(now)
    sched.connection_closed(connects[1].connection_id, now)
    (c,) = of(sched.plan(now), Connect)
    assert c.queue == "b/v"


# ---- outcomes -------------------------------------------------------------------------


def test_per_recipient_mix_450_550_250_in_one_transaction() -> None:
    """T29: rcpt0 is retried, rcpt1 bounces once, rcpt2 is delivered once."""
    sched = make(QueueSettings(retry_after=(600.0,), jitter=0.0))
    now = 1000.0
    sched.add(Q, 5, [0, 1, 2], now, now)
    cid = open_one(sched, now)
    sched.plan(now)
    results = [
        Result(msg_id=5, rcpts=(0,), outcome=Outcome.transient("450 4.2.1 mailbox busy")),
        Result(msg_id=5, rcpts=(1,), outcome=Outcome.permanent("550 5.1.1 unknown user")),
        Result(msg_id=5, rcpts=(2,), outcome=Outcome.delivered("250 2.0.0 ok")),
    ]
    actions = sched.report(cid, results, now)
    assert of(actions, Defer) == [
        Defer(
            queue=Q,
            msg_id=5,
            rcpts=(0,),
            attempts=1,
            next_attempt=1600.0,
            text="450 4.2.1 mailbox busy",
        )
    ]
    assert of(actions, Bounce) == [
        Bounce(
            queue=Q,
            msg_id=5,
            rcpts=(1,),
            reason=BounceReason.PERMANENT,
            text="550 5.1.1 unknown user",
        )
    ]
    assert of(actions, Delivered) == [Delivered(queue=Q, msg_id=5, rcpts=(2,), text="250 2.0.0 ok")]
    snap = sched.snapshot(Q)
    assert snap is not None
    assert (snap.recipients, snap.deferred, snap.next_retry) == (1, 1, 1600.0)
    # Only rcpt0 comes back, at its retry time, with its attempt count.
    sched.plan(now)  # closes the idle connection
    sched.connection_closed(cid, now)
    assert not of(sched.plan(1599.0), Connect)
    cid = open_one(sched, 1600.0)
    (deliver,) = of(sched.plan(1600.0), Deliver)
    assert deliver.transactions == (Transaction(msg_id=5, rcpts=(0,), attempts=1),)


def test_bounce_on_4xx_bounces_at_the_first_4xx() -> None:
    sched = make(QueueSettings(bounce_on_4xx=True))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    sched.plan(1000.0)
    actions = sched.report(
        cid, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.transient("451 4.7.1 later"))], 1000.0
    )
    (bounce,) = of(actions, Bounce)
    assert bounce.reason is BounceReason.BOUNCE_ON_4XX
    assert of(actions, Defer) == []


def test_message_scope_failure_applies_to_every_recipient_reported() -> None:
    sched = make()
    sched.add(Q, 1, [0, 1, 2], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    sched.plan(1000.0)
    fail = Outcome.transient("452 4.3.1 insufficient storage", Scope.MESSAGE)
    actions = sched.report(cid, [Result(msg_id=1, rcpts=(0, 1, 2), outcome=fail)], 1000.0)
    (defer,) = of(actions, Defer)
    assert defer.rcpts == (0, 1, 2)
    assert not of(actions, Close)


def test_session_failure_closes_and_does_not_penalise_untried_recipients() -> None:
    sched = make(QueueSettings(max_smtp_out=1), max_batch=3)
    now = 1000.0
    for i in range(3):
        sched.add(Q, i, [0], now, now)
    cid = open_one(sched, now)
    sched.plan(now)
    lost = Outcome.transient("421 4.4.2 closing connection", Scope.SESSION)
    actions = sched.report(
        cid,
        [
            Result(msg_id=0, rcpts=(0,), outcome=Outcome.delivered()),
            Result(msg_id=1, rcpts=(0,), outcome=lost),
        ],
        now,
    )
    assert of(actions, Close) == [
        Close(queue=Q, connection_id=cid, reason=CloseReason.SESSION_ERROR)
    ]
    assert of(actions, Defer) == []
    sched.connection_closed(cid, now)  # message 2 was never tried
    cid = open_one(sched, now)
    (deliver,) = of(sched.plan(now), Deliver)
    assert sorted((t.msg_id, t.attempts) for t in deliver.transactions) == [(1, 0), (2, 0)]


def test_repeated_session_failures_put_the_queue_in_retry_mode() -> None:
    sched = make(QueueSettings(max_smtp_out=1, retry_after=(300.0,), jitter=0.0))
    now = 1000.0
    sched.add(Q, 1, [0], now, now)
    lost = Outcome.transient("connection lost", Scope.SESSION)
    for _ in range(3):
        cid = open_one(sched, now)
        sched.plan(now)
        sched.report(cid, [Result(msg_id=1, rcpts=(0,), outcome=lost)], now)
        sched.connection_closed(cid, now)
    assert of(sched.plan(now), Connect) == []
    snap = sched.snapshot(Q)
    assert snap is not None
    assert snap.retry_mode_until == 1300.0
    assert len(of(sched.plan(1300.0), Connect)) == 1


def test_site_failure_defers_the_batch_and_stops_new_connections() -> None:
    sched = make(QueueSettings(max_smtp_out=2, retry_after=(600.0,), jitter=0.0), max_batch=1)
    now = 1000.0
    for i in range(4):
        sched.add(Q, i, [0], now, now)
    c1, c2 = of(sched.plan(now), Connect)
    sched.connection_opened(c1.connection_id, now)
    sched.connection_opened(c2.connection_id, now)
    assert len(of(sched.plan(now), Deliver)) == 2
    site = Outcome.transient("421 4.7.0 too many connections", Scope.SITE)
    actions = sched.report(c1.connection_id, [Result(msg_id=0, rcpts=(0,), outcome=site)], now)
    assert len(of(actions, Defer)) == 1
    assert of(actions, Close)[0].reason is CloseReason.RETRY_MODE
    # The other connection finishes its transaction but gets nothing more.
    sched.report(c2.connection_id, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.delivered())], now)
    actions = sched.plan(now)
    assert of(actions, Deliver) == []
    assert of(actions, Connect) == []
    assert [c.reason for c in of(actions, Close)] == [CloseReason.RETRY_MODE]
    assert sched.snapshot(Q).events[-1].type is EventType.RETRY_MODE  # type: ignore[union-attr]


def test_dns_error_uses_retry_after_dns_error() -> None:
    sched = make(QueueSettings(retry_after=(600.0,), retry_after_dns_error=60.0, jitter=0.0))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    (c,) = of(sched.plan(1000.0), Connect)
    sched.connection_failed(
        c.connection_id, Outcome.transient("SERVFAIL", Scope.SITE, dns=True), 1000.0
    )
    assert sched.snapshot(Q).retry_mode_until == 1060.0  # type: ignore[union-attr]
    assert of(sched.plan(1059.0), Connect) == []
    assert len(of(sched.plan(1060.0), Connect)) == 1


def test_permanent_connect_failure_bounces_the_queue() -> None:
    sched = make(QueueSettings(jitter=0.0))
    sched.add(Q, 1, [0, 1], 1000.0, 1000.0)
    sched.add(Q, 2, [0], 1000.0, 1000.0, attempts=1, next_attempt=5000.0)
    c = of(sched.plan(1000.0), Connect)[0]
    nullmx = Outcome.permanent("556 5.1.10 null MX", Scope.SITE)
    actions = sched.connection_failed(c.connection_id, nullmx, 1000.0)
    assert sorted((b.msg_id, b.rcpts) for b in of(actions, Bounce)) == [(1, (0, 1)), (2, (0,))]
    assert sched.snapshot(Q).recipients == 0  # type: ignore[union-attr]


def test_a_failed_connect_beside_open_ones_shrinks_the_window_not_the_queue() -> None:
    sched = make(QueueSettings(max_smtp_out=4), max_batch=1)
    now = 1000.0
    for i in range(20):
        sched.add(Q, i, [0], now, now)
    connects = of(sched.plan(now), Connect)
    assert len(connects) == 4
    for c in connects[:2]:
        sched.connection_opened(c.connection_id, now)
    sched.connection_failed(connects[2].connection_id, Outcome.transient("refused"), now)
    actions = sched.plan(now)
    assert len(of(actions, Deliver)) == 2
    assert of(actions, Connect) == []  # 2 open + 1 opening >= window of 2
    assert sched.snapshot(Q).retry_mode_until is None  # type: ignore[union-attr]


def test_report_about_unknown_recipients_is_a_caller_bug() -> None:
    sched = make()
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    sched.plan(1000.0)
    with pytest.raises(SchedulerError, match="not in flight"):
        sched.report(cid, [Result(msg_id=1, rcpts=(3,), outcome=Outcome.delivered())], 1000.0)
    with pytest.raises(SchedulerError, match="unknown connection"):
        sched.report(999, [], 1000.0)
    with pytest.raises(SchedulerError, match="not connecting"):
        sched.connection_opened(cid, 1000.0)


def test_unreported_transactions_stay_in_flight() -> None:
    sched = make(QueueSettings(max_smtp_out=1), max_batch=2)
    for i in range(2):
        sched.add(Q, i, [0], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    sched.plan(1000.0)
    sched.report(cid, [Result(msg_id=0, rcpts=(0,), outcome=Outcome.delivered())], 1000.0)
    assert sched.snapshot(Q).in_flight == 1  # type: ignore[union-attr]
    assert of(sched.plan(1000.0), Deliver) == []  # still busy with message 1


# ---- operator commands ----------------------------------------------------------------


def test_schedule_now_retries_deferred_recipients_at_once() -> None:
    sched = make(QueueSettings(retry_after=(3600.0,), jitter=0.0))
    sched.add(Q, 1, [0], 1000.0, 1000.0, attempts=2, next_attempt=4000.0)
    assert of(sched.plan(1000.0), Connect) == []
    sched.schedule_now(Q, 1000.0)
    assert len(of(sched.plan(1000.0), Connect)) == 1


def test_delete_removes_queued_recipients_and_in_flight_ones_after_their_attempt() -> None:
    sched = make(QueueSettings(max_smtp_out=1), max_batch=1)
    now = 1000.0
    sched.add(Q, 1, [0], now, now)
    sched.add(Q, 2, [0, 1], now, now)
    sched.add(Q, 3, [0], now, now, attempts=1, next_attempt=9000.0)
    cid = open_one(sched, now)
    (deliver,) = of(sched.plan(now), Deliver)
    assert deliver.transactions[0].msg_id == 1
    removed = sched.delete(Q, now, msg_ids=[1, 3])
    assert removed == [Removed(queue=Q, msg_id=3, rcpts=(0,))]
    later = sched.report(
        cid, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.transient("450 busy"))], now
    )
    assert of(later, Removed) == [Removed(queue=Q, msg_id=1, rcpts=(0,))]
    assert of(later, Defer) == []
    rest = sched.delete(Q, now)
    assert rest == [Removed(queue=Q, msg_id=2, rcpts=(0, 1))]
    assert sched.snapshot(Q).recipients == 0  # type: ignore[union-attr]
    assert sched.delete("nowhere/v", now) == []


def test_backoff_mode_lowers_the_cap_at_once() -> None:
    settings = QueueSettings(
        max_smtp_out=4, backoff=BackoffSettings(max_smtp_out=1, retry_after=(3600.0,)), jitter=0
    )
    sched = make(settings, max_batch=1)
    now = 1000.0
    for i in range(20):
        sched.add(Q, i, [0], now, now)
    connects = of(sched.plan(now), Connect)
    for c in connects:
        sched.connection_opened(c.connection_id, now)
    delivers = of(sched.plan(now), Deliver)
    assert len(delivers) == 4
    sched.set_mode(Q, QueueMode.BACKOFF, now, "421 RP-001 rate limited")
    closes = 0
    for d in delivers:
        msg = d.transactions[0].msg_id
        ok = Result(msg_id=msg, rcpts=(0,), outcome=Outcome.delivered())
        closes += len(of(sched.report(d.connection_id, [ok], now), Close))
    assert closes == 3  # above the backoff cap of 1: they finish their message and close
    snap = sched.snapshot(Q)
    assert snap is not None
    assert snap.mode is QueueMode.BACKOFF
    assert snap.events[-1].text == "421 RP-001 rate limited"
    # A deferral in backoff uses backoff-retry-after.
    (d,) = of(sched.plan(now), Deliver)
    msg = d.transactions[0].msg_id
    actions = sched.report(
        d.connection_id, [Result(msg_id=msg, rcpts=(0,), outcome=Outcome.transient("451"))], now
    )
    assert of(actions, Defer)[0].next_attempt == now + 3600.0


class CountingThrottle:
    """At most ``per`` units per whole ``window`` seconds (a test throttle)."""

    def __init__(self, per: int, window: float) -> None:
        self.per, self.window = per, window
        self.start, self.used = 0.0, 0

    def try_take(self, now: float, n: int) -> float | None:
        start = now - now % self.window
        if start != self.start:
            self.start, self.used = start, 0
        if self.used + n > self.per:
            return self.start + self.window
        self.used += n
        return None


def test_throttles_hold_only_their_own_queue() -> None:
    throttled = "slow.example/v"
    sched = make(QueueSettings(max_smtp_out=5))
    sched.configure(
        throttled,
        QueueSettings(max_smtp_out=5),
        QueueThrottles(connect=(CountingThrottle(1, 60.0),), message=(CountingThrottle(2, 60.0),)),
    )
    d = Driver(sched, FakeClock(start_wall=6000.0))
    for i in range(6):
        d.add(throttled, i)
        d.add("fast.example/v", 100 + i)
    d.run_until(d.now + 1)
    fast = [t for t, q, _, _ in d.ledger.attempts if q == "fast.example/v"]
    assert len(fast) == 6
    slow = [t for t, q, _, _ in d.ledger.attempts if q == throttled]
    assert len(slow) == 2
    d.run_until(d.now + 180)
    slow = [t for t, q, _, _ in d.ledger.attempts if q == throttled]
    assert len(slow) == 6
    windows = [t - t % 60 for t in slow]
    assert max(windows.count(w) for w in windows) == 2
    assert len([t for t, q in d.ledger.connects if q == throttled]) <= 4


def test_events_and_snapshot_for_the_monitor() -> None:
    sched = make(QueueSettings(jitter=0.0, retry_after=(60.0,)))
    sched.add(Q, 1, [0], 1000.0, 1000.0)
    cid = open_one(sched, 1000.0)
    sched.plan(1000.0)
    sched.report(cid, [Result(msg_id=1, rcpts=(0,), outcome=Outcome.transient("451 x"))], 1000.0)
    sched.pause(Q, 1001.0)
    snap = sched.snapshot(Q)
    assert snap is not None
    assert [(e.type, e.text) for e in snap.events] == [
        (EventType.DEFERRED, "451 x"),
        (EventType.PAUSED, "paused by operator"),
    ]
    assert (snap.recipients, snap.deferred, snap.paused, snap.next_retry) == (1, 1, True, 1060.0)
    assert sched.snapshot("nope/v") is None
    assert [s.name for s in sched.snapshots()] == [Q]


def test_random_source_is_injected() -> None:
    """The same seed gives the same schedule: nothing random comes from elsewhere."""

    def run(seed: int) -> list[float]:
        sched = Scheduler(rng=random.Random(seed))
        for i in range(20):
            sched.add(Q, i, [0], 1000.0, 1000.0, attempts=3)  # overdue: spread on recovery
        return [sched.snapshot(Q).next_retry or 0.0]  # type: ignore[union-attr]

    assert run(1) == run(1)


def test_reload_lowering_max_smtp_out_closes_idle_connections_above_it() -> None:
    sched = make(QueueSettings(max_smtp_out=3, connection_idle_timeout=60.0))
    for i in range(3):
        sched.add(Q, i, [0], 1000.0, 1000.0)
    for c in of(sched.plan(1000.0), Connect):
        sched.connection_opened(c.connection_id, 1000.0)
    for d in of(sched.plan(1000.0), Deliver):
        ok = [
            Result(msg_id=t.msg_id, rcpts=t.rcpts, outcome=Outcome.delivered())
            for t in d.transactions
        ]
        sched.report(d.connection_id, ok, 1000.0)
    sched.reconfigure(lambda _q: QueueSettings(max_smtp_out=1, connection_idle_timeout=60.0))
    closes = of(sched.plan(1001.0), Close)
    assert [c.reason for c in closes] == [CloseReason.OVER_LIMIT] * 2


def test_scheduler_rejects_impossible_parameters() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(rng=FixedRandom(), max_batch=0)
