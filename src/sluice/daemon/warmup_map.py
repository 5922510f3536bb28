"""Config warm-up plans → the scheduler's :class:`~sluice.sched.WarmupPlan` objects and the
VMTAs they apply to (pure functions; docs/shaping.md §6).

At start-up (and after a reload) the daemon does::

    plans = warmup_plans(config)
    for a in warmup_assignments(config):
        state.assign(a.vmta, plans[a.plan], a.start)   # a.start == parse_day(a.start_day)

Each ``day N-M`` line becomes M-N+1 identical :class:`~sluice.sched.WarmupStep` values (step
i is day i+1); percentages become fractions; an unset ``hold-min-sample`` is the
scheduler's default. A group's domains also take in every domain that ``queue-to`` files
under one of them on a VMTA using the plan (``msn.com`` → ``hotmail.com``), so
``WarmupPlan.group_of`` gives the same answer for a recipient domain and for its queue's
domain.

Public names: WarmupAssignment, sched_plan, warmup_plans, warmup_assignments. Nothing here
raises for a configuration that loaded.
"""

from __future__ import annotations

from typing import NamedTuple

from sluice.config import Config
from sluice.config.model import WarmupPlanDef
from sluice.sched.warmup import DEFAULT_MIN_SAMPLE, WarmupPlan, WarmupStep, parse_day

__all__ = ["WarmupAssignment", "sched_plan", "warmup_assignments", "warmup_plans"]


class WarmupAssignment(NamedTuple):
    """``warmup-plan`` and ``warmup-start`` of one ``<virtual-mta>``."""

    vmta: str
    plan: str
    #: ``warmup-start`` as written in ISO form (``2026-12-01``), what ``parse_day`` takes.
    start_day: str

    @property
    def start(self) -> float:
        """Epoch seconds of 00:00 UTC on the start day (``WarmupState.assign``'s ``start``)."""
        return parse_day(self.start_day)


def _fraction(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


def sched_plan(plan: WarmupPlanDef, extra: dict[str, str] | None = None) -> WarmupPlan:
    """The scheduler's form of one plan; ``extra`` adds domains to groups (domain → group)
    after the ones the plan lists."""
    steps: list[WarmupStep] = []
    for day in plan.days:
        step = WarmupStep(total=day.total, groups=day.caps)
        steps.extend(step for _ in range(day.first, day.last + 1))
    added = extra or {}
    groups = tuple(
        (g.name, g.domains + tuple(d for d, name in added.items() if name == g.name))
        for g in plan.groups
    )
    min_sample = plan.min_sample
    return WarmupPlan(
        name=plan.name,
        steps=tuple(steps),
        domain_groups=groups,
        hold_deferral_rate=_fraction(plan.hold_deferral_percent),
        hold_bounce_rate=_fraction(plan.hold_bounce_percent),
        min_sample=DEFAULT_MIN_SAMPLE if min_sample is None else min_sample,
        overflow_vmta=plan.overflow_vmta,
    )


def _queued_into_groups(config: Config, plan: WarmupPlanDef) -> dict[str, str]:
    """Domains in no group of ``plan`` whose queue (after ``queue-to``) on a VMTA using the
    plan is a domain of a group: domain → that group."""
    group_of = {d: g.name for g in plan.groups for d in g.domains}
    vmtas = config.warmup_users().get(plan.name, ())
    out: dict[str, str] = {}
    for domain in config.domain_names():
        if domain in group_of:
            continue
        for vmta in vmtas:
            target = config.queue_target(domain, vmta)
            group = None if target.cycle else group_of.get(target.target)
            if group is not None:
                out.setdefault(domain, group)
    return out


def warmup_plans(config: Config) -> dict[str, WarmupPlan]:
    """Every ``<warmup-plan>`` of ``config`` as the scheduler's plan, by name."""
    return {
        name: sched_plan(plan, _queued_into_groups(config, plan))
        for name, plan in config.warmup_plans.items()
    }


def warmup_assignments(config: Config) -> list[WarmupAssignment]:
    """The VMTAs that have a warm-up plan, in file order."""
    out: list[WarmupAssignment] = []
    for name in config.vmtas:
        found = config.warmup_of(name)
        if found is not None:
            plan, start = found
            out.append(WarmupAssignment(vmta=name, plan=plan.name, start_day=start.text))
    return out
