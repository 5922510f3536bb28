"""Warm-up of new source IPs: PowerMTA's cold VMTA, and Sluice's warm-up plans.

**Cold VMTA** (powermta.md §6, §10). When mail is assigned to VMTA ``foo`` and a VMTA
``foo-cold`` exists, ``max-cold-virtual-mta-msg N/day`` (per destination domain) sends the
first N messages of each day for each domain through ``foo-cold`` — the new IP gets a small,
steady share of real traffic. :class:`ColdVmtaRouter` is that choice, with per-day counters
(days are UTC days: a new day starts at 00:00 UTC).

**Warm-up plans** (a Sluice extension; no peer has one, KumoMTA #326). A named
:class:`WarmupPlan` is a list of daily caps — for the whole VMTA and/or per destination
domain group (``microsoft`` = hotmail.com outlook.com live.com msn.com) — applied to a VMTA
from a start date by :class:`WarmupState`. Each cap (the VMTA's overall cap and each group's)
climbs one step per day, **unless** the day just ended was unhealthy: with at least
``min_sample`` outcomes, a deferral rate above ``hold_deferral_rate`` or a bounce rate above
``hold_bounce_rate`` holds that cap at its step for another day. The overall cap climbs on the
VMTA's overall rates, a group's cap on that group's rates, so Microsoft deferring holds the
Microsoft ramp while Gmail's keeps climbing. After the last step the plan is done: no caps.

Mail over today's cap either **waits** for the next day (the default: the plan acts as a
daily throttle — :meth:`WarmupState.throttle` is a :class:`~sluice.sched.throttle.Throttle`
for the queue's message throttles, counting attempted recipients) or, with
``overflow_vmta``, is **routed** to another VMTA at injection (:meth:`WarmupState.route`,
counting messages). Before the start date the plan's first step applies (a VMTA being warmed
is new). Counters live in memory: after a restart a day's count starts again from zero.

Public names: ColdVmtaRouter, WarmupPlan, WarmupStep, WarmupState, WarmupStatus,
WarmupThrottle, DAY, start_of_day, parse_day. ``WarmupPlan``/``WarmupStep`` raise
``ValueError`` for impossible values; ``parse_day`` raises ``ValueError`` for a bad date;
``WarmupState`` raises ``KeyError`` for a VMTA it was never given.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sluice.sched.outcome import OutcomeKind

__all__ = [
    "DAY",
    "DEFAULT_MIN_SAMPLE",
    "ColdVmtaRouter",
    "WarmupPlan",
    "WarmupState",
    "WarmupStatus",
    "WarmupStep",
    "WarmupThrottle",
    "parse_day",
    "start_of_day",
]

#: Seconds in a (UTC) day: the period of ``N/day`` limits.
DAY = 86400.0
#: Outcomes a day needs before its rates may hold a warm-up step (Sluice's choice: below a
#: hundred, one or two deferrals would decide the ramp).
DEFAULT_MIN_SAMPLE = 100
#: Suffix of the companion VMTA that ``max-cold-virtual-mta-msg`` sends through (PowerMTA).
COLD_SUFFIX = "-cold"
#: The key of a VMTA's overall counters (groups have names).
_TOTAL = ""


def start_of_day(now: float) -> float:
    """00:00 UTC of the day holding epoch time ``now``."""
    return math.floor(now / DAY) * DAY


def parse_day(text: str) -> float:
    """``2026-12-01`` → epoch seconds of 00:00 UTC that day."""
    day = _dt.date.fromisoformat(text)
    return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC).timestamp()


# ---- cold VMTA --------------------------------------------------------------------------


class ColdVmtaRouter:
    """``max-cold-virtual-mta-msg``: the first N messages per domain per day go to
    ``VMTA-cold``. ``limit_for(vmta, domain)`` is N for that queue (0: off);
    ``exists(name)`` says whether a VMTA is configured."""

    __slots__ = ("_counts", "_day", "_exists", "_limit_for")

    def __init__(self, limit_for: Callable[[str, str], int], exists: Callable[[str], bool]) -> None:
        self._limit_for = limit_for
        self._exists = exists
        self._day = -math.inf
        self._counts: dict[tuple[str, str], int] = {}

    def route(self, vmta: str, domain: str, now: float) -> str:
        """The VMTA that one message for ``domain`` assigned to ``vmta`` goes through."""
        cold = vmta + COLD_SUFFIX
        domain = domain.lower()
        limit = self._limit_for(vmta, domain)
        if limit <= 0 or not self._exists(cold):
            return vmta
        self._roll(now)
        key = (vmta, domain)
        used = self._counts.get(key, 0)
        if used >= limit:
            return vmta
        self._counts[key] = used + 1
        return cold

    def count(self, vmta: str, domain: str, now: float) -> int:
        """Messages sent through ``vmta``'s cold companion for ``domain`` today."""
        self._roll(now)
        return self._counts.get((vmta, domain.lower()), 0)

    def _roll(self, now: float) -> None:
        day = start_of_day(now)
        if day != self._day:
            self._day = day
            self._counts.clear()


# ---- warm-up plans ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupStep:
    """One day's caps: ``total`` for the VMTA (None: none) and per domain group."""

    total: int | None = None
    groups: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.total is not None and self.total < 0:
            raise ValueError("a daily cap must be >= 0")
        if any(cap < 0 for _, cap in self.groups):
            raise ValueError("a daily cap must be >= 0")

    def cap(self, key: str) -> int | None:
        if key == _TOTAL:
            return self.total
        for name, cap in self.groups:
            if name == key:
                return cap
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupPlan:
    """``<warmup-plan NAME>``: daily steps, domain groups, hold thresholds, overflow."""

    name: str
    #: Step i applies on the (i+1)-th day of the ramp.
    steps: tuple[WarmupStep, ...]
    #: Group name → its destination domains (lower case).
    domain_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Hold a cap when the day's deferral (bounce) rate is above this fraction; None: never.
    hold_deferral_rate: float | None = None
    hold_bounce_rate: float | None = None
    min_sample: int = DEFAULT_MIN_SAMPLE
    #: Send mail over today's cap through this VMTA instead of waiting for tomorrow.
    overflow_vmta: str | None = None
    _group_of: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a warm-up plan needs at least one day")
        for rate in (self.hold_deferral_rate, self.hold_bounce_rate):
            if rate is not None and not 0.0 <= rate <= 1.0:
                raise ValueError("hold rates are fractions within [0, 1]")
        if self.min_sample < 0:
            raise ValueError("min_sample must be >= 0")
        group_of: dict[str, str] = {}
        for group, domains in self.domain_groups:
            if not group:
                raise ValueError("a domain group needs a name")
            for domain in domains:
                group_of[domain.lower()] = group
        object.__setattr__(self, "_group_of", group_of)

    def group_of(self, domain: str) -> str | None:
        """The domain group of ``domain`` (None: in no group)."""
        return self._group_of.get(domain.lower())


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupStatus:
    """Where one VMTA is in its plan (for the monitor)."""

    vmta: str
    plan: str
    #: Days since the start (0 on the first day).
    day: int
    #: Per key ("" = overall, else a group): step index (0-based; ``len(steps)`` = done),
    #: today's cap (None: none), taken today, and days held so far.
    steps: tuple[tuple[str, int, int | None, int, int], ...]


class _Counter:
    """One key's day: units taken and outcomes seen, the step and days held."""

    __slots__ = ("bounced", "deferred", "delivered", "held", "step", "taken")

    def __init__(self) -> None:
        self.step = 0
        self.held = 0
        self.taken = 0
        self.delivered = 0
        self.deferred = 0
        self.bounced = 0

    def new_day(self, plan: WarmupPlan, days: int) -> None:
        """``days`` days passed since this counter's day: climb (or hold) accordingly."""
        if self._unhealthy(plan):
            self.held += 1
            days -= 1
        self.step += days
        self.taken = self.delivered = self.deferred = self.bounced = 0

    def _unhealthy(self, plan: WarmupPlan) -> bool:
        seen = self.delivered + self.deferred + self.bounced
        if seen == 0 or seen < plan.min_sample:
            return False
        deferral, bounce = plan.hold_deferral_rate, plan.hold_bounce_rate
        return (deferral is not None and self.deferred / seen > deferral) or (
            bounce is not None and self.bounced / seen > bounce
        )


class _VmtaWarmup:
    __slots__ = ("counters", "day", "plan", "start")

    def __init__(self, plan: WarmupPlan, start: float) -> None:
        self.plan = plan
        self.start = start
        self.day = 0
        self.counters: dict[str, _Counter] = {_TOTAL: _Counter()}
        for group, _ in plan.domain_groups:
            self.counters[group] = _Counter()

    def roll(self, now: float) -> None:
        day = max(0, math.floor((now - self.start) / DAY))
        if day > self.day:
            for counter in self.counters.values():
                counter.new_day(self.plan, day - self.day)
            self.day = day

    def counter(self, key: str) -> _Counter:
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = _Counter()
            c.step = self.day
        return c

    def cap(self, key: str) -> int | None:
        c = self.counter(key)
        steps = self.plan.steps
        return None if c.step >= len(steps) else steps[c.step].cap(key)

    def room(self, group: str | None) -> float:
        """How many more units may go today (``inf``: no cap)."""
        room = math.inf
        for key in (_TOTAL, group):
            if key is None:
                continue
            cap = self.cap(key)
            if cap is not None:
                room = min(room, cap - self.counter(key).taken)
        return max(0.0, room)

    def take(self, group: str | None, n: int) -> None:
        self.counters[_TOTAL].taken += n
        if group is not None:
            self.counter(group).taken += n


class WarmupState:
    """The warm-up of every VMTA that has a plan: daily caps, steps, holds."""

    __slots__ = ("_vmtas",)

    def __init__(self) -> None:
        self._vmtas: dict[str, _VmtaWarmup] = {}

    def assign(self, vmta: str, plan: WarmupPlan, start: float) -> None:
        """Warm ``vmta`` up by ``plan`` from ``start`` (epoch seconds; the daemon passes
        ``parse_day(warmup-start)``). Re-assigning the same plan and start keeps the state."""
        current = self._vmtas.get(vmta)
        if current is None or current.plan != plan or current.start != start:
            self._vmtas[vmta] = _VmtaWarmup(plan, start)

    @property
    def any(self) -> bool:
        """Some VMTA has a warm-up plan."""
        return bool(self._vmtas)

    def plan_of(self, vmta: str) -> WarmupPlan | None:
        w = self._vmtas.get(vmta)
        return None if w is None else w.plan

    def _at(self, vmta: str, now: float) -> _VmtaWarmup | None:
        w = self._vmtas.get(vmta)
        if w is not None:
            w.roll(now)
        return w

    def allowance(self, vmta: str, domain_group: str | None, now: float) -> float:
        """Units ``vmta`` may still send today to ``domain_group`` (None: no group);
        ``inf`` when it has no plan or the plan sets no cap for it."""
        w = self._at(vmta, now)
        return math.inf if w is None else w.room(domain_group)

    def try_take(self, vmta: str, domain_group: str | None, now: float, n: int) -> float | None:
        """Take ``n`` units of today's caps (None), or say when tomorrow starts. A request
        larger than what is left waits for the next day whole: a day's cap is never exceeded,
        except by a single transaction larger than the whole cap, which is let through alone
        as the day's first so that it cannot wait forever."""
        w = self._at(vmta, now)
        if w is None:
            return None
        room = w.room(domain_group)
        fresh = w.counters[_TOTAL].taken == 0 and (
            domain_group is None or w.counter(domain_group).taken == 0
        )
        if n > room and not (fresh and room > 0):
            return w.start + (w.day + 1) * DAY
        w.take(domain_group, n)
        return None

    def route(self, vmta: str, domain: str, now: float) -> str:
        """Overflow mode (``overflow_vmta`` set): ``vmta`` while today's caps allow one more
        message to ``domain`` (and count it), else the overflow VMTA."""
        w = self._at(vmta, now)
        if w is None:
            return vmta
        group = w.plan.group_of(domain)
        if w.room(group) >= 1 or w.plan.overflow_vmta is None:
            w.take(group, 1)
            return vmta
        return w.plan.overflow_vmta

    def observe(self, vmta: str, domain: str, kind: OutcomeKind, now: float, n: int = 1) -> None:
        """Feed ``n`` recipients' outcome (delivered, deferred = transient, bounced =
        permanent; expiries are not fed) for ``domain`` sent through ``vmta``."""
        w = self._at(vmta, now)
        if w is None:
            return
        group = w.plan.group_of(domain)
        for key in (_TOTAL, group):
            if key is None:
                continue
            c = w.counter(key)
            match kind:
                case OutcomeKind.DELIVERED:
                    c.delivered += n
                case OutcomeKind.TRANSIENT:
                    c.deferred += n
                case OutcomeKind.PERMANENT:
                    c.bounced += n

    def throttle(self, vmta: str, domain_group: str | None) -> WarmupThrottle:
        """A :class:`~sluice.sched.throttle.Throttle` over ``vmta``'s caps for one group,
        for ``Scheduler.configure(queue, settings, QueueThrottles(message=(...)))``."""
        return WarmupThrottle(self, vmta, domain_group)

    def status(self, vmta: str, now: float) -> WarmupStatus:
        w = self._at(vmta, now)
        if w is None:
            raise KeyError(vmta)
        rows = tuple(
            (key, c.step, w.cap(key), c.taken, c.held) for key, c in sorted(w.counters.items())
        )
        return WarmupStatus(vmta=vmta, plan=w.plan.name, day=w.day, steps=rows)


class WarmupThrottle:
    """A queue's view of its VMTA's warm-up caps (the Throttle protocol)."""

    __slots__ = ("_group", "_state", "_vmta")

    def __init__(self, state: WarmupState, vmta: str, group: str | None) -> None:
        self._state = state
        self._vmta = vmta
        self._group = group

    def try_take(self, now: float, n: int) -> float | None:
        return self._state.try_take(self._vmta, self._group, now, n)
