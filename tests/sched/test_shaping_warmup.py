"""Warm-up: PowerMTA's cold VMTA counters and day rollover; Sluice's warm-up plans — daily
steps, per-group caps, holding on bad days, waiting for tomorrow, overflow (fake clock)."""

from __future__ import annotations

import math
import random

import pytest
from shaping_net import Net

from sluice.sched import (
    ColdVmtaRouter,
    OutcomeKind,
    QueueSettings,
    QueueThrottles,
    Scheduler,
    WarmupPlan,
    WarmupState,
    WarmupStep,
    parse_day,
)
from sluice.sched.warmup import DAY, start_of_day

DEC1 = parse_day("2026-12-01")
MS = ("hotmail.com", "outlook.com", "live.com", "msn.com")


def test_parse_day_is_utc_midnight() -> None:
    assert DEC1 == 1796083200.0
    assert start_of_day(DEC1 + 86399.5) == DEC1
    with pytest.raises(ValueError, match="month"):
        parse_day("2026-13-01")


# ---- cold VMTA --------------------------------------------------------------------------


def test_cold_vmta_takes_the_first_n_per_domain_per_day() -> None:
    limits = {("foo", "gmail.com"): 2, ("foo", "yahoo.com"): 1}
    router = ColdVmtaRouter(
        lambda v, d: limits.get((v, d), 0), lambda name: name in {"foo", "foo-cold"}
    )
    t = DEC1 + 3600.0
    assert [router.route("foo", "gmail.com", t) for _ in range(4)] == [
        "foo-cold",
        "foo-cold",
        "foo",
        "foo",
    ]
    assert router.route("foo", "Yahoo.COM", t) == "foo-cold"
    assert router.route("foo", "yahoo.com", t) == "foo"
    assert router.route("foo", "aol.com", t) == "foo"  # limit 0: off
    assert router.count("foo", "gmail.com", t) == 2
    # 00:00 UTC: a new day, new counters.
    assert router.route("foo", "gmail.com", DEC1 + DAY - 0.001) == "foo"
    assert router.route("foo", "gmail.com", DEC1 + DAY) == "foo-cold"
    assert router.count("foo", "gmail.com", DEC1 + DAY) == 1


def test_cold_vmta_needs_the_cold_companion_to_exist() -> None:
    router = ColdVmtaRouter(lambda _v, _d: 100, lambda name: name == "bar")
    assert router.route("bar", "gmail.com", DEC1) == "bar"


# ---- warm-up plans ----------------------------------------------------------------------


def plan(**kw: object) -> WarmupPlan:
    return WarmupPlan(
        name="new-ip",
        steps=(
            WarmupStep(total=100, groups=(("microsoft", 20),)),
            WarmupStep(total=200, groups=(("microsoft", 40),)),
            WarmupStep(total=400, groups=(("microsoft", 80),)),
        ),
        domain_groups=(("microsoft", MS),),
        **kw,  # type: ignore[arg-type]
    )


def take_all(state: WarmupState, vmta: str, group: str | None, now: float) -> int:
    n = 0
    while state.try_take(vmta, group, now, 1) is None:
        n += 1
        assert n < 10_000
    return n


def test_plan_steps_up_daily_with_group_caps_inside_the_total() -> None:
    state = WarmupState()
    state.assign("ip21", plan(), DEC1)
    t = DEC1 + 600.0
    assert state.allowance("ip21", "microsoft", t) == 20
    assert take_all(state, "ip21", "microsoft", t) == 20
    assert state.try_take("ip21", "microsoft", t, 1) == DEC1 + DAY  # wait for tomorrow
    assert take_all(state, "ip21", None, t) == 80  # the total caps the rest
    assert state.allowance("ip21", None, t) == 0
    t2 = DEC1 + DAY + 1.0
    assert state.allowance("ip21", "microsoft", t2) == 40
    assert state.allowance("ip21", None, t2) == 200
    t4 = DEC1 + 3 * DAY + 1.0
    assert state.allowance("ip21", None, t4) == math.inf  # the plan is done: warm
    assert state.allowance("other", None, t4) == math.inf  # no plan: no cap
    status = state.status("ip21", t4)
    assert status.day == 3
    assert [(k, step, cap) for k, step, cap, _, _ in status.steps] == [
        ("", 3, None),
        ("microsoft", 3, None),
    ]


def test_a_bad_day_holds_that_cap_at_its_step() -> None:
    state = WarmupState()
    state.assign("ip21", plan(hold_deferral_rate=0.10, min_sample=10), DEC1)
    t = DEC1 + 60.0
    # Microsoft defers 30 % of 20; the rest of the VMTA is clean.
    state.observe("ip21", "hotmail.com", OutcomeKind.DELIVERED, t, n=14)
    state.observe("ip21", "outlook.com", OutcomeKind.TRANSIENT, t, n=6)
    state.observe("ip21", "gmail.com", OutcomeKind.DELIVERED, t, n=200)
    t2 = DEC1 + DAY + 60.0
    assert state.allowance("ip21", "microsoft", t2) == 20  # held at day 1
    assert state.allowance("ip21", None, t2) == 200  # overall 6/220 = 2.7 %: climbs
    status = state.status("ip21", t2)
    assert {k: held for k, _, _, _, held in status.steps} == {"": 0, "microsoft": 1}
    # A clean day 2: Microsoft climbs one step (not two: holding costs a day).
    state.observe("ip21", "msn.com", OutcomeKind.DELIVERED, t2, n=20)
    t3 = DEC1 + 2 * DAY + 60.0
    assert state.allowance("ip21", "microsoft", t3) == 40
    assert state.allowance("ip21", None, t3) == 400


def test_bounce_rate_holds_and_small_samples_do_not() -> None:
    state = WarmupState()
    state.assign("ip21", plan(hold_bounce_rate=0.05, min_sample=100), DEC1)
    state.observe("ip21", "gmail.com", OutcomeKind.PERMANENT, DEC1 + 1, n=5)  # 5 of 5
    assert state.allowance("ip21", None, DEC1 + DAY + 1) == 200  # too few to judge
    state.observe("ip21", "gmail.com", OutcomeKind.PERMANENT, DEC1 + DAY + 2, n=10)
    state.observe("ip21", "gmail.com", OutcomeKind.DELIVERED, DEC1 + DAY + 2, n=100)
    assert state.allowance("ip21", None, DEC1 + 2 * DAY + 1) == 200  # 9 % bounced: held


def test_days_without_traffic_climb_and_before_start_uses_day_one() -> None:
    state = WarmupState()
    state.assign("ip21", plan(), DEC1)
    assert state.allowance("ip21", None, DEC1 - 3600.0) == 100
    assert state.allowance("ip21", "microsoft", DEC1 + 2 * DAY + 5) == 80


def test_overflow_routes_to_another_vmta_once_the_day_is_full() -> None:
    state = WarmupState()
    state.assign("ip21", plan(overflow_vmta="warm-pool"), DEC1)
    t = DEC1 + 10.0
    routes = [state.route("ip21", "live.com", t) for _ in range(25)]
    assert routes.count("ip21") == 20
    assert routes[20:] == ["warm-pool"] * 5
    assert state.route("ip21", "gmail.com", t) == "ip21"
    assert state.route("unplanned", "gmail.com", t) == "unplanned"


def test_a_transaction_larger_than_a_whole_cap_goes_alone_at_the_start_of_a_day() -> None:
    state = WarmupState()
    state.assign("ip21", plan(), DEC1)
    assert state.try_take("ip21", "microsoft", DEC1, 30) is None  # 30 > 20, fresh day
    assert state.try_take("ip21", "microsoft", DEC1, 1) == DEC1 + DAY


def test_reassigning_the_same_plan_keeps_the_counts() -> None:
    state = WarmupState()
    p = plan()
    state.assign("ip21", p, DEC1)
    take_all(state, "ip21", None, DEC1)
    state.assign("ip21", p, DEC1)  # a reload
    assert state.allowance("ip21", None, DEC1) == 0
    assert state.plan_of("ip21") is p
    with pytest.raises(KeyError):
        state.status("nope", DEC1)


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="at least one day"):
        WarmupPlan(name="x", steps=())
    with pytest.raises(ValueError, match="fractions"):
        plan(hold_deferral_rate=10.0)
    with pytest.raises(ValueError, match="daily cap"):
        WarmupStep(total=-1)
    assert plan().group_of("Outlook.com") == "microsoft"
    assert plan().group_of("gmail.com") is None


def test_warmup_throttle_holds_a_queue_until_the_next_day() -> None:
    state = WarmupState()
    state.assign("ip21", plan(), DEC1)
    sched = Scheduler(rng=random.Random(1))
    q = "hotmail.com/ip21"
    sched.configure(
        q,
        QueueSettings(max_smtp_out=2),
        QueueThrottles(message=(state.throttle("ip21", "microsoft"),)),
    )
    net = Net(sched, start=DEC1 + 3600.0, txn_delay=1.0)
    for i in range(100):
        net.add(q, i)
    net.run_until(DEC1 + DAY - 1.0)
    assert len(net.log.delivers) == 20
    net.run_until(DEC1 + DAY + 3600.0)
    assert len(net.log.delivers) == 60  # day 2: 40 more, first at 00:00 UTC
    assert min(t for t, *_ in net.log.delivers[20:]) >= DEC1 + DAY
