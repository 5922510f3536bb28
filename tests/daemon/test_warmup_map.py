"""Config ``<warmup-plan>`` → the scheduler's WarmupPlan, and the VMTAs it is assigned to."""

from __future__ import annotations

import math
from pathlib import Path

from sluice.config import load_config, load_config_text
from sluice.daemon.warmup_map import (
    WarmupAssignment,
    sched_plan,
    warmup_assignments,
    warmup_plans,
)
from sluice.sched import OutcomeKind, WarmupState, WarmupStep, parse_day
from sluice.sched.warmup import DAY, DEFAULT_MIN_SAMPLE

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "config" / "data" / "warmup.conf"


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def test_days_become_steps_with_their_caps() -> None:
    config = load_config(str(SAMPLE), read_text=_read)
    plan = warmup_plans(config)["new-ip"]
    assert plan.name == "new-ip"
    assert plan.steps == (
        WarmupStep(total=2000, groups=(("microsoft", 500), ("gmail", 1000))),
        WarmupStep(total=4000, groups=(("microsoft", 1000), ("gmail", 2000))),
        WarmupStep(total=8000, groups=(("microsoft", 2000), ("gmail", 4000))),
        WarmupStep(total=8000, groups=(("microsoft", 2000), ("gmail", 4000))),
        WarmupStep(total=15000),
        WarmupStep(total=None, groups=(("microsoft", 8000),)),
        WarmupStep(total=None, groups=(("microsoft", 8000),)),
    )
    assert plan.domain_groups == (
        ("microsoft", ("hotmail.com", "outlook.com", "live.com", "msn.com")),
        ("gmail", ("gmail.com", "googlemail.com")),
    )
    assert plan.group_of("MSN.com") == "microsoft"
    assert plan.group_of("yahoo.com") is None


def test_thresholds_become_fractions_and_defaults_apply() -> None:
    config = load_config(str(SAMPLE), read_text=_read)
    plans = warmup_plans(config)
    new_ip, spill = plans["new-ip"], plans["spill"]
    assert new_ip.hold_deferral_rate == 0.10
    assert new_ip.hold_bounce_rate == 0.025
    assert new_ip.min_sample == 200
    assert new_ip.overflow_vmta is None
    assert spill.hold_deferral_rate is None
    assert spill.hold_bounce_rate is None
    assert spill.min_sample == DEFAULT_MIN_SAMPLE
    assert spill.overflow_vmta == "warm-pool"
    assert spill.steps == (WarmupStep(total=500),) * 3
    assert spill.domain_groups == ()


def test_table_default_of_hold_min_sample_is_the_schedulers() -> None:
    config = load_config_text("", "t.conf")
    assert config.table["hold-min-sample"].default == DEFAULT_MIN_SAMPLE


def test_assignments_name_vmta_plan_and_start_day() -> None:
    config = load_config(str(SAMPLE), read_text=_read)
    got = warmup_assignments(config)
    assert got == [
        WarmupAssignment(vmta="ip21", plan="new-ip", start_day="2026-12-01"),
        WarmupAssignment(vmta="ip22", plan="spill", start_day="2027-01-15"),
    ]
    vmta, plan, start_day = got[0]  # a plain tuple too
    assert (vmta, plan, start_day) == ("ip21", "new-ip", "2026-12-01")
    assert got[0].start == parse_day("2026-12-01") == 1796083200.0


def test_queue_to_sources_join_their_targets_group() -> None:
    text = """
<domain msn.com live.com>
    queue-to hotmail.com
</domain>
<warmup-plan p>
    domain-group microsoft hotmail.com
    domain-group other live.com
    day 1 10 microsoft=5 other=5
</warmup-plan>
<virtual-mta v>
    warmup-plan p
    warmup-start 2026-12-01
</virtual-mta>
"""
    config = load_config_text(text, "t.conf")
    plan = warmup_plans(config)["p"]
    assert plan.group_of("msn.com") == "microsoft"  # queued as hotmail.com
    assert plan.group_of("live.com") == "other"  # listed explicitly: that wins (and warns)
    assert [w.directive for w in config.warnings] == ["domain-group"]
    alone = sched_plan(config.warmup_plans["p"])
    assert alone.group_of("msn.com") is None


def test_a_plan_nobody_uses_is_mapped_but_not_assigned() -> None:
    config = load_config_text("<warmup-plan p>\n day 1-2 *\n</warmup-plan>\n", "t.conf")
    assert list(warmup_plans(config)) == ["p"]
    assert warmup_assignments(config) == []


def test_seed_has_no_plans() -> None:
    config = load_config(str(REPO / "examples" / "seed.conf"), read_text=_read)
    assert warmup_plans(config) == {}
    assert warmup_assignments(config) == []


def test_assigned_state_enforces_the_configured_ramp_and_holds() -> None:
    config = load_config(str(SAMPLE), read_text=_read)
    plans = warmup_plans(config)
    state = WarmupState()
    for a in warmup_assignments(config):
        state.assign(a.vmta, plans[a.plan], a.start)
    start = parse_day("2026-12-01")
    assert state.allowance("ip21", "microsoft", start - DAY) == 500  # before: day 1's caps
    assert state.allowance("ip21", None, start + 10) == 2000
    assert state.allowance("ip21", "gmail", start + 10) == 1000
    # Day 1 at Microsoft: 200 outcomes, 30 deferred (15% > 10%): its ramp holds a day.
    state.observe("ip21", "hotmail.com", OutcomeKind.DELIVERED, start + 60, 170)
    state.observe("ip21", "hotmail.com", OutcomeKind.TRANSIENT, start + 60, 30)
    day2 = start + DAY + 10
    assert state.allowance("ip21", "microsoft", day2) == 500
    assert state.allowance("ip21", "gmail", day2) == 2000
    assert state.allowance("ip21", None, day2) == 2000  # the VMTA's 15% holds its cap too
    # Below hold-min-sample (200) a bad day does not hold.
    state.observe("ip21", "gmail.com", OutcomeKind.TRANSIENT, day2, 199)
    day3 = start + 2 * DAY + 10
    assert state.allowance("ip21", "gmail", day3) == 4000
    assert state.allowance("ip21", "microsoft", day3) == 1000


def test_assigned_state_caps_by_day_and_ends_after_the_last() -> None:
    config = load_config(str(SAMPLE), read_text=_read)
    plans = warmup_plans(config)
    state = WarmupState()
    for a in warmup_assignments(config):
        state.assign(a.vmta, plans[a.plan], a.start)
    start = parse_day("2026-12-01")
    throttle = state.throttle("ip21", "microsoft")
    assert throttle.try_take(start + 1, 500) is None
    assert throttle.try_take(start + 2, 1) == start + DAY  # the cap is reached: tomorrow
    day4 = start + 3 * DAY + 1
    assert state.allowance("ip21", "microsoft", day4) == 2000
    assert state.allowance("ip21", None, day4) == 8000
    day6 = start + 5 * DAY + 1
    assert state.allowance("ip21", None, day6) == math.inf
    assert state.allowance("ip21", "microsoft", day6) == 8000
    assert state.allowance("ip21", "gmail", start + 7 * DAY + 1) == math.inf
    ip22 = parse_day("2027-01-15")
    assert state.route("ip22", "example.org", ip22) == "ip22"
    for _ in range(499):
        state.route("ip22", "example.org", ip22)
    assert state.route("ip22", "example.org", ip22 + 5) == "warm-pool"
