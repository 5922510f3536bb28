"""The backoff machine: reply rules, limits dropped at once, every way in and out of backoff,
disabled source IPs, rerouting, and the seed's Microsoft scenario (fake clock only)."""

from __future__ import annotations

import random
import re
from typing import cast

import pytest
from shaping_net import Net, max_in_window

from sluice.sched import (
    Action,
    BackoffSettings,
    Close,
    CloseReason,
    Connect,
    Defer,
    Deliver,
    EventType,
    Limits,
    ModeChanged,
    Outcome,
    QueueMode,
    QueueSettings,
    QueueSnapshot,
    RateLimit,
    ReplyRule,
    Reroute,
    Result,
    Scheduler,
    Scope,
    SourceDisabled,
    SourceIp,
    Transaction,
)

Q = "hotmail.com/transactional"
T0 = 1_800_000_000.0
RP001 = "421 RP-001 (BAY004-MC1F35) Unfortunately, messages from 192.0.2.7 weren't sent."
R432 = "421 4.3.2 The maximum number of concurrent connections has exceeded a limit"

#: The seed's inline rules: ``421 RP-001 *, 1h, 5, 1000`` and ``421 4.3.2 *, 45m, 2, 500``.
SEED_RULES = (
    ReplyRule(
        code="421",
        literal="RP-001",
        mode="backoff",
        to_normal_after=3600.0,
        max_smtp_out=5,
        max_msg_rate=RateLimit.per_hour(1000),
        text="421 RP-001 *, 1h, 5, 1000",
    ),
    ReplyRule(
        code="421",
        literal="4.3.2",
        mode="backoff",
        to_normal_after=2700.0,
        max_smtp_out=2,
        max_msg_rate=RateLimit.per_hour(500),
        text="421 4.3.2 *, 45m, 2, 500",
    ),
)
SEED = QueueSettings(
    max_smtp_out=20,
    max_msg_rate=RateLimit.per_hour(5000),
    reply_rules=SEED_RULES,
    jitter=0.0,
)


SEED_LIMITS = Limits(max_smtp_out=20, retry_after=(600.0,), max_msg_rate=RateLimit.per_hour(5000))


def make(settings: QueueSettings, **kw: int) -> Scheduler:
    kw.setdefault("max_batch", 1)  # one transaction per Deliver: each reported on its own
    return Scheduler(rng=random.Random(1), settings_for=lambda _q: settings, **kw)


def snap(sched: Scheduler, q: str = Q) -> QueueSnapshot:
    s = sched.snapshot(q)
    assert s is not None
    return s


def of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


class Recorder:
    """Stands in for the scheduler (everything delegated) and keeps what each ``report``
    call returned. A proxy, not a patched method: the compiled Scheduler's methods are
    read-only."""

    def __init__(self, sched: Scheduler) -> None:
        self.calls: list[tuple[float, int, list[Result], list[Action], QueueSnapshot]] = []
        self.sched = sched

    def report(self, cid: int, results: list[Result], now: float) -> list[Action]:
        actions = self.sched.report(cid, results, now)
        self.calls.append((now, cid, list(results), actions, snap(self.sched)))
        return actions

    def __getattr__(self, name: str) -> object:
        return getattr(self.sched, name)


def one_reply_at(at: float, text: str, scope: Scope = Scope.MESSAGE):  # type: ignore[no-untyped-def]
    """250 to everything, except the first transaction finishing at or after ``at``."""
    sent = [False]

    def reply(now: float, _q: str, _t: Transaction, _cid: int) -> Outcome:
        if now >= at and not sent[0]:
            sent[0] = True
            return Outcome.transient(text, scope)
        return Outcome.delivered()

    return reply


# ---- the seed scenario ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "duration", "cap", "per_hour"),
    [(RP001, 3600.0, 5, 1000), (R432, 2700.0, 2, 500)],
)
def test_seed_scenario_backoff_on_the_first_421(
    reply: str, duration: float, cap: int, per_hour: int
) -> None:
    sched = make(SEED)
    rec = Recorder(sched)
    tb = T0 + 300.0
    # 20 s per transaction: the queue needs all 20 connections to approach 5000/h.
    net = Net(cast(Scheduler, rec), start=T0, txn_delay=20.0, reply=one_reply_at(tb, reply))
    for i in range(8000):
        net.add(Q, i)
    net.run_until(tb - 1.0)
    assert net.conns(Q) == 20
    assert snap(sched).mode is QueueMode.NORMAL
    net.run_until(tb + 25.0)
    net.txn_delay = 1.0  # from now on the remote is fast: only the rate limits the queue

    # Within the report call that carried the 421: backoff, lower limits, this connection
    # closes after its message, idle connections above the cap close too.
    (now, cid, _results, actions, after) = next(
        c for c in rec.calls if any(r.outcome.text == reply for r in c[2])
    )
    t_first = now
    (mode,) = of(actions, ModeChanged)
    assert (mode.mode, mode.text, mode.until) == (QueueMode.BACKOFF, reply, now + duration)
    assert after.mode is QueueMode.BACKOFF
    assert after.limits is not None
    assert after.limits.max_smtp_out == cap
    assert after.limits.max_msg_rate == RateLimit.per_hour(per_hour)
    assert Close(queue=Q, connection_id=cid, reason=CloseReason.OVER_LIMIT) in actions
    (defer,) = of(actions, Defer)
    # backoff-retry-after (1h default), rounded up to the retry timer's whole second
    assert now + 3600.0 <= defer.next_attempt <= now + 3601.0
    assert after.events[-2].type is EventType.MODE
    assert after.events[-2].text == reply
    assert "max-smtp-out=" + str(cap) in after.events[-2].action

    # Connections above the cap got no new work: each finished its message and closed.
    busy_after = {c for t, _, c, _ in net.log.delivers if t > t_first}
    assert len(busy_after) <= cap
    assert net.conns(Q) <= cap
    closes = [c for t, c in net.log.closes if t >= t_first]
    assert sum(1 for c in closes if c.reason is CloseReason.OVER_LIMIT) == 20 - cap

    # No Deliver beyond the backoff rate, for the whole period.
    net.run_until(t_first + duration - 1.0)
    in_backoff = [t for t in net.log.deliver_times() if t_first < t < t_first + duration]
    interval = 3600.0 / per_hour
    for window in (1.0, interval, 60.0, 600.0, duration):
        assert max_in_window(in_backoff, window) <= 1 + window / interval + 1e-9
    # ...and it does keep sending at that rate (the first 25 s had slow transactions)
    assert len(in_backoff) >= per_hour * duration / 3600.0 - 10
    assert net.peak[Q] == 20
    assert max(net.conns(Q), 0) <= cap

    # After the rule's duration: back to normal, by itself.
    net.run_until(t_first + duration + 120.0)
    back = [m for t, m in net.log.modes if m.mode is QueueMode.NORMAL]
    assert len(back) == 1
    assert t_first + duration <= next(t for t, m in net.log.modes if m is back[0])
    assert snap(sched).mode is QueueMode.NORMAL
    after_normal = [t for t in net.log.deliver_times() if t > t_first + duration]
    assert len(after_normal) > 120 / interval  # faster than the backoff rate again
    assert snap(sched).limits == SEED_LIMITS


def test_a_second_matching_reply_extends_the_backoff() -> None:
    sched = make(SEED)
    net = Net(sched, start=T0, txn_delay=1.0)
    texts = {T0 + 10.0: RP001, T0 + 1800.0: RP001}

    def reply(now: float, _q: str, _t: Transaction, _cid: int) -> Outcome:
        for at in list(texts):
            if now >= at:
                return Outcome.transient(texts.pop(at), Scope.MESSAGE)
        return Outcome.delivered()

    net.reply = reply
    for i in range(3000):
        net.add(Q, i)
    net.run_until(T0 + 3700.0)
    assert snap(sched).mode is QueueMode.BACKOFF  # 1 h after the second 421, not the first
    events = [e for e in snap(sched).events if e.type in (EventType.MODE, EventType.RULE)]
    assert [e.type for e in events][:2] == [EventType.MODE, EventType.RULE]
    assert events[1].action.startswith("backoff extended")
    net.run_until(T0 + 1801.0 + 3600.0 + 5.0)
    assert snap(sched).mode is QueueMode.NORMAL
    assert len(net.log.modes) == 2


def test_two_rules_the_stricter_limits_hold_until_each_lapses() -> None:
    sched = make(SEED)
    net = Net(sched, start=T0, txn_delay=1.0)
    texts = {T0 + 10.0: RP001, T0 + 20.0: R432}

    def reply(now: float, _q: str, _t: Transaction, _cid: int) -> Outcome:
        for at in sorted(texts):
            if now >= at:
                return Outcome.transient(texts.pop(at), Scope.MESSAGE)
        return Outcome.delivered()

    net.reply = reply
    for i in range(3000):
        net.add(Q, i)
    net.run_until(T0 + 100.0)
    limits = snap(sched).limits
    assert limits is not None
    assert (limits.max_smtp_out, limits.max_msg_rate) == (2, RateLimit.per_hour(500))
    assert snap(sched).backoff_until == pytest.approx(T0 + 10.0 + 3600.0, abs=2.0)
    net.run_until(T0 + 20.0 + 2700.0 + 10.0)  # 4.3.2 lapsed, RP-001 still holds
    limits = snap(sched).limits
    assert limits is not None
    assert snap(sched).mode is QueueMode.BACKOFF
    assert (limits.max_smtp_out, limits.max_msg_rate) == (5, RateLimit.per_hour(1000))
    net.run_until(T0 + 10.0 + 3600.0 + 10.0)
    assert snap(sched).mode is QueueMode.NORMAL


def test_connection_failure_texts_match_too() -> None:
    rule = ReplyRule(
        pattern=re.compile(r"^Connection (refused|timed out)"), mode="backoff", text="conn"
    )
    settings = QueueSettings(
        reply_rules=(rule,),
        backoff=BackoffSettings(max_smtp_out=1, to_normal_after=600.0),
        retry_after=(60.0,),
        jitter=0.0,
    )
    sched = make(settings)
    sched.add(Q, 1, [0], T0, T0)
    (c,) = of(sched.plan(T0), Connect)
    actions = sched.connection_failed(
        c.connection_id, Outcome.transient("Connection refused", Scope.SITE), T0
    )
    (mode,) = of(actions, ModeChanged)
    assert mode.until == T0 + 600.0
    assert snap(sched).mode is QueueMode.BACKOFF
    # Retry mode after the failure uses the backoff retry list (1h by default).
    assert snap(sched).retry_mode_until == T0 + 3600.0
    sched.plan(T0 + 600.0)
    assert snap(sched).mode is QueueMode.NORMAL


def test_queue_setting_backoff_to_normal_after_applies_when_the_rule_has_none() -> None:
    rule = ReplyRule(pattern=re.compile(r"\[TS0[1-3]\]"), mode="backoff")
    never = QueueSettings(reply_rules=(rule,))
    timed = QueueSettings(reply_rules=(rule,), backoff=BackoffSettings(to_normal_after=900.0))
    for settings, until in ((never, None), (timed, T0 + 900.0)):
        sched = make(settings)
        sched.add(Q, 1, [0], T0, T0)
        (c,) = of(sched.plan(T0), Connect)
        sched.connection_opened(c.connection_id, T0)
        sched.plan(T0)
        out = Outcome.transient("421 4.7.0 [TS01] Messages temporarily deferred")
        actions = sched.report(c.connection_id, [Result(msg_id=1, rcpts=(0,), outcome=out)], T0)
        assert of(actions, ModeChanged)[0].until == until
        sched.plan(T0 + 100_000.0)
        expected = QueueMode.BACKOFF if until is None else QueueMode.NORMAL
        assert snap(sched).mode is expected


def deliver_one(sched: Scheduler, now: float, outcome: Outcome) -> list[Action]:
    """Plan at ``now``, open what is asked, run one Deliver with ``outcome``."""
    first = sched.plan(now)
    for c in of(first, Connect):
        sched.connection_opened(c.connection_id, now)
    (d,) = (of(first, Deliver) or of(sched.plan(now), Deliver))[:1]
    t = d.transactions[0]
    return sched.report(
        d.connection_id, [Result(msg_id=t.msg_id, rcpts=t.rcpts, outcome=outcome)], now
    )


def test_backoff_to_normal_after_delivery_counts_only_work_handed_out_in_backoff() -> None:
    rule = ReplyRule(code="421", literal="RP-001", mode="backoff")
    settings = QueueSettings(
        max_smtp_out=2,
        reply_rules=(rule,),
        backoff=BackoffSettings(to_normal_after_delivery=True),
        connection_idle_timeout=60.0,
    )
    sched = make(settings, max_batch=1)
    for i in range(10):
        sched.add(Q, i, [0], T0, T0)
    for c in of(sched.plan(T0), Connect):
        sched.connection_opened(c.connection_id, T0)
    d1, d2 = of(sched.plan(T0), Deliver)
    t1, t2 = d1.transactions[0], d2.transactions[0]
    out = Outcome.transient(RP001)
    sched.report(d1.connection_id, [Result(msg_id=t1.msg_id, rcpts=(0,), outcome=out)], T0 + 1)
    assert snap(sched).mode is QueueMode.BACKOFF
    # d2 was handed out before the backoff: its delivery does not end it.
    ok = Outcome.delivered()
    sched.report(d2.connection_id, [Result(msg_id=t2.msg_id, rcpts=(0,), outcome=ok)], T0 + 2)
    assert snap(sched).mode is QueueMode.BACKOFF
    (d3,) = of(sched.plan(T0 + 3), Deliver)[:1]
    t3 = d3.transactions[0]
    actions = sched.report(
        d3.connection_id, [Result(msg_id=t3.msg_id, rcpts=(0,), outcome=ok)], T0 + 4
    )
    (mode,) = of(actions, ModeChanged)
    assert mode.mode is QueueMode.NORMAL
    assert snap(sched).mode is QueueMode.NORMAL


def test_mode_normal_rule_ends_backoff() -> None:
    rules = (
        ReplyRule(code="421", literal="RP-001", mode="backoff"),
        ReplyRule(pattern=re.compile(r"^250 .*queued"), mode="normal"),
    )
    sched = make(QueueSettings(max_smtp_out=1, reply_rules=rules, connection_idle_timeout=60.0))
    for i in range(3):
        sched.add(Q, i, [0], T0, T0)
    deliver_one(sched, T0, Outcome.transient(RP001))
    assert snap(sched).mode is QueueMode.BACKOFF
    deliver_one(sched, T0 + 1, Outcome.delivered("250 2.0.0 OK"))
    assert snap(sched).mode is QueueMode.BACKOFF  # 250 without "queued": no rule
    actions = deliver_one(sched, T0 + 2, Outcome.delivered("250 2.6.0 queued as 1234"))
    assert [m.mode for m in of(actions, ModeChanged)] == [QueueMode.NORMAL]


def test_first_matching_rule_wins() -> None:
    rules = (
        ReplyRule(pattern=re.compile(r"^421"), disable_source_ip=True, reenable_after=60.0),
        ReplyRule(code="421", literal="RP-001", mode="backoff"),
    )
    sched = make(QueueSettings(reply_rules=rules, connection_idle_timeout=60.0))
    sched.add(Q, 1, [0], T0, T0)
    actions = deliver_one(sched, T0, Outcome.transient(RP001))
    assert of(actions, ModeChanged) == []
    assert [d.source for d in of(actions, SourceDisabled)] == [None]
    assert snap(sched).mode is QueueMode.NORMAL


def test_set_mode_command_and_backoff_retry_after() -> None:
    settings = QueueSettings(
        max_smtp_out=4,
        retry_after=(60.0,),
        jitter=0.0,
        backoff=BackoffSettings(max_smtp_out=1, retry_after=(1800.0,), to_normal_after=7200.0),
    )
    sched = make(settings)
    sched.set_mode(Q, QueueMode.BACKOFF, T0, "operator")
    s = snap(sched)
    assert (s.mode, s.backoff_until, s.events[-1].text) == (
        QueueMode.BACKOFF,
        T0 + 7200.0,
        "operator",
    )
    assert s.limits is not None
    assert s.limits.max_smtp_out == 1
    sched.add(Q, 1, [0], T0, T0)
    actions = deliver_one(sched, T0, Outcome.transient("451 try later"))
    assert of(actions, Defer)[0].next_attempt == T0 + 1800.0
    sched.set_mode(Q, QueueMode.NORMAL, T0 + 10, "operator done")
    assert snap(sched).mode is QueueMode.NORMAL
    assert snap(sched).backoff_until is None


def test_backoff_limits_are_never_looser_than_normal() -> None:
    rule = ReplyRule(
        code="421",
        literal="x",
        mode="backoff",
        max_smtp_out=50,
        max_msg_rate=RateLimit.per_hour(100_000),
    )
    settings = QueueSettings(
        max_smtp_out=3, max_msg_rate=RateLimit.per_hour(600), reply_rules=(rule,)
    )
    sched = make(settings)
    sched.add(Q, 1, [0], T0, T0)
    deliver_one(sched, T0, Outcome.transient("421 x"))
    limits = snap(sched).limits
    assert limits is not None
    assert (limits.max_smtp_out, limits.max_msg_rate) == (3, RateLimit.per_hour(600))


# ---- disable-source-ip ------------------------------------------------------------------


def test_disable_source_ip_stops_using_that_source_until_reenabled() -> None:
    rule = ReplyRule(
        pattern=re.compile(r"^550 5\.7\.1 .*S3150"), disable_source_ip=True, reenable_after=600.0
    )
    a, b = SourceIp(address="10.0.0.1"), SourceIp(address="10.0.0.2")
    settings = QueueSettings(
        max_smtp_out=2, max_msg_per_connection=20, sources=(a, b), reply_rules=(rule,)
    )
    sched = make(settings, max_batch=1)
    blocked = {"10.0.0.1"}

    def reply(now: float, _q: str, _t: Transaction, cid: int) -> Outcome:
        if net.source_of.get(cid) in blocked and now < T0 + 30:
            return Outcome.permanent("550 5.7.1 Unfortunately, messages ... (S3150)")
        return Outcome.delivered()

    net = Net(sched, start=T0, txn_delay=1.0, reply=reply)
    for i in range(2000):
        net.add(Q, i)
    net.run_until(T0 + 300.0)
    ((_, disabled),) = net.log.disabled
    assert (disabled.source, disabled.until) == ("10.0.0.1", pytest.approx(T0 + 1.1 + 600.0))
    src_of = {cid: s for _, _, cid, s in net.log.connects}
    after = [src_of[cid] for t, _, cid, _ in net.log.delivers if T0 + 2 < t < T0 + 600]
    assert after
    assert set(after) == {"10.0.0.2"}
    assert any(c.reason is CloseReason.SOURCE_DISABLED for _, c in net.log.closes)
    assert snap(sched).disabled_sources == (("10.0.0.1", pytest.approx(T0 + 601.1)),)
    net.run_until(T0 + 800.0)
    later = {s for t, _, _, s in net.log.connects if t > T0 + 601.2}
    assert "10.0.0.1" in later
    assert snap(sched).disabled_sources == ()
    assert any(e.type is EventType.SOURCE_ENABLED for e in snap(sched).events)


def test_disable_without_named_sources_stops_the_queue_and_all_disabled_means_backoff() -> None:
    rule = ReplyRule(pattern=re.compile(r"^554"), disable_source_ip=True)
    settings = QueueSettings(
        max_smtp_out=1,
        reply_rules=(rule,),
        reenable_source_ip_after=120.0,
        backoff=BackoffSettings(upon_all_sources_disabled=True, to_normal_after=30.0),
        connection_idle_timeout=60.0,
    )
    sched = make(settings)
    for i in range(3):
        sched.add(Q, i, [0], T0, T0)
    actions = deliver_one(sched, T0, Outcome.permanent("554 5.7.1 blocked"))
    assert [(d.source, d.until) for d in of(actions, SourceDisabled)] == [(None, T0 + 120.0)]
    (close,) = of(actions, Close)
    assert close.reason is CloseReason.SOURCE_DISABLED
    sched.connection_closed(close.connection_id, T0)
    assert [m.mode for m in of(actions, ModeChanged)] == [QueueMode.BACKOFF]
    assert of(sched.plan(T0 + 60.0), Connect) == []
    assert snap(sched).mode is QueueMode.NORMAL  # backoff lapsed at +30
    assert of(sched.plan(T0 + 120.0), Connect) != []


# ---- reroute ----------------------------------------------------------------------------


def test_backoff_reroute_moves_waiting_mail_to_another_vmta() -> None:
    rule = ReplyRule(code="421", literal="RP-001", mode="backoff", to_normal_after=600.0)
    settings = QueueSettings(
        max_smtp_out=1,
        reply_rules=(rule,),
        backoff=BackoffSettings(reroute_to_vmta="overflow"),
        retry_after=(60.0,),
        jitter=0.0,
        connection_idle_timeout=60.0,
    )
    sched = make(settings, max_batch=1)
    for i in range(5):
        sched.add(Q, i, [0], T0 - 100.0, T0)
    deliver_one(sched, T0, Outcome.transient(RP001))
    actions = sched.plan(T0 + 1)
    moved = of(actions, Reroute)
    assert {r.to_vmta for r in moved} == {"overflow"}
    assert sorted(r.msg_id for r in moved) == [0, 1, 2, 3, 4]
    deferred = [r for r in moved if r.attempts == 1]
    assert len(deferred) == 1
    assert deferred[0].next_attempt == T0 + 3600.0  # backoff-retry-after
    assert all(r.arrival == T0 - 100.0 for r in moved)
    s = snap(sched)
    assert (s.ready, s.deferred) == (0, 0)
    assert s.events[-1].type is EventType.REROUTED
    # New mail for the queue while it backs off moves too; in normal mode it stays.
    sched.add(Q, 9, [0], T0 + 2, T0 + 2)
    assert [r.msg_id for r in of(sched.plan(T0 + 2), Reroute)] == [9]
    sched.plan(T0 + 600.0)
    sched.add(Q, 10, [0], T0 + 601, T0 + 601)
    assert of(sched.plan(T0 + 601), Reroute) == []


def test_observe_reply_for_replies_outside_transactions() -> None:
    sched = make(QueueSettings(reply_rules=SEED_RULES, connection_idle_timeout=60.0))
    sched.add(Q, 1, [0], T0, T0)
    (c,) = of(sched.plan(T0), Connect)
    sched.connection_opened(c.connection_id, T0)
    actions = sched.observe_reply(c.connection_id, R432, T0)
    assert [m.mode for m in of(actions, ModeChanged)] == [QueueMode.BACKOFF]
    assert sched.observe_reply(c.connection_id, "221 bye", T0) == []


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="pattern"):
        ReplyRule(mode="backoff")
    with pytest.raises(ValueError, match="mode"):
        ReplyRule(code="421", literal="x", mode="slow")
    rule = SEED_RULES[0]
    assert rule.matches(RP001)
    assert not rule.matches("450 RP-001")
    assert rule.describe() == (
        "mode=backoff backoff-to-normal-after=3600s max-smtp-out=5 max-msg-rate=1000/h"
    )


def test_effective_limits_in_backoff_take_the_backoff_rates_never_looser() -> None:
    from sluice.sched import effective_limits

    settings = QueueSettings(
        max_connect_rate=RateLimit(count=10, seconds=60),
        max_data_volume_rate=RateLimit(count=1_000_000, seconds=60),
        backoff=BackoffSettings(
            max_connect_rate=RateLimit(count=1, seconds=60),
            max_data_volume_rate=RateLimit(count=5_000_000, seconds=60),
        ),
    )
    limits = effective_limits(settings, QueueMode.BACKOFF)
    assert limits.max_connect_rate == RateLimit(count=1, seconds=60)
    assert limits.max_data_volume_rate == RateLimit(count=1_000_000, seconds=60)
    assert effective_limits(settings, QueueMode.NORMAL).max_connect_rate == RateLimit(
        count=10, seconds=60
    )
