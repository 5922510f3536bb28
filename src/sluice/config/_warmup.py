"""The ``<warmup-plan NAME>`` block (a Sluice extension): its lines, the plan, its checks.

Inside the block, ``domain-group NAME DOMAINS`` and ``day N[-M] TOTAL|* [GROUP=CAP …]`` are
parsed here (:func:`parse_line`); the option lines (``hold-if-deferral-rate``,
``hold-if-bounce-rate``, ``hold-min-sample``, ``overflow-to-virtual-mta``) are ordinary
directives of scope ``warmup-plan`` that the loader stores. :func:`build_plan` turns a closed
block into a :class:`~sluice.config.model.WarmupPlanDef` and reports what is wrong with it
(days must run from 1 without gaps; a group a day caps must be defined somewhere in the same
block, before or after that day); :func:`check_vmta` checks a closed ``<virtual-mta>``
(``warmup-plan`` needs ``warmup-start``). :func:`check_warmup` checks the references across
the file: plan names, ``overflow-to-virtual-mta``, and group domains that ``queue-to`` files
under another queue.

Public names: LINE_NAMES, MAX_WARMUP_DAYS, parse_line, build_plan, check_vmta, check_warmup.
:func:`parse_line` raises :class:`~sluice.config.values.ValueFormError` naming the expected
form; the others return diagnostics and never raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence, Set

from sluice.config._config import Config
from sluice.config.errors import Diagnostic, Severity
from sluice.config.lexer import Token
from sluice.config.model import DomainGroup, Origin, Settings, WarmupDay, WarmupPlanDef
from sluice.config.resolve import queue_target
from sluice.config.values import ValueFormError

__all__ = [
    "LINE_NAMES",
    "MAX_WARMUP_DAYS",
    "build_plan",
    "check_vmta",
    "check_warmup",
    "parse_line",
]

#: Lines of a ``<warmup-plan>`` that this module parses (the rest are table directives).
LINE_NAMES = frozenset({"day", "domain-group"})
#: Longest ramp a plan may describe. Published IP warm-up schedules run 4-8 weeks (Gmail and
#: Microsoft sender guidance); a year is far beyond any of them and bounds the step table.
MAX_WARMUP_DAYS = 366

_DAY_FORM = "day N[-M] TOTAL|* [GROUP=CAP ...], e.g. day 3-4 8000 microsoft=2000"
_GROUP_FORM = "domain-group NAME DOMAIN,DOMAIN,... (or $macro), e.g. domain-group gmail gmail.com"
_DAYS_RE = re.compile(r"([0-9]{1,6})(?:-([0-9]{1,6}))?")
_CAP_RE = re.compile(r"([A-Za-z0-9_.-]+)=([0-9]{1,15})")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_TOTAL_RE = re.compile(r"[0-9]{1,15}")


def _origin(token: Token) -> Origin:
    return Origin(file=token.file, line=token.line)


def parse_line(
    token: Token, macros: Mapping[str, tuple[str, ...]], domain_re: re.Pattern[str]
) -> DomainGroup | WarmupDay:
    """A ``day`` or ``domain-group`` line (``token.name`` is one of :data:`LINE_NAMES`).
    ``macros`` are the ``domain-macro`` lists defined so far; ``domain_re`` is the loader's
    pattern of a domain name."""
    if token.name == "day":
        return _parse_day(token)
    return _parse_group(token, macros, domain_re)


def _parse_day(token: Token) -> WarmupDay:
    args = token.args
    if len(args) < 2:
        raise ValueFormError(f"expected {_DAY_FORM}")
    days = _DAYS_RE.fullmatch(args[0])
    if days is None:
        raise ValueFormError(f"expected a day number or range N-M first, got {args[0]!r}")
    first = int(days[1])
    last = int(days[2]) if days[2] is not None else first
    if first < 1 or last < first:
        raise ValueFormError(f"days count from 1 and a range runs upwards, got {args[0]!r}")
    if last > MAX_WARMUP_DAYS:
        raise ValueFormError(f"a plan has at most {MAX_WARMUP_DAYS} days, got {args[0]!r}")
    if args[1] == "*":
        total = None
    elif _TOTAL_RE.fullmatch(args[1]):
        total = int(args[1])
    else:
        raise ValueFormError(
            f"expected the day's overall cap (a whole number, or * for none), got {args[1]!r}"
        )
    caps: list[tuple[str, int]] = []
    for word in args[2:]:
        cap = _CAP_RE.fullmatch(word)
        if cap is None:
            raise ValueFormError(f"expected GROUP=CAP such as microsoft=500, got {word!r}")
        if any(name == cap[1] for name, _ in caps):
            raise ValueFormError(f"group {cap[1]} is capped twice on this line")
        caps.append((cap[1], int(cap[2])))
    return WarmupDay(
        first=first,
        last=last,
        total=total,
        caps=tuple(caps),
        text=f"day {token.rest}",
        origin=_origin(token),
    )


def _parse_group(
    token: Token, macros: Mapping[str, tuple[str, ...]], domain_re: re.Pattern[str]
) -> DomainGroup:
    name, _, rest = token.rest.strip().partition(" ")
    words = [w for w in re.split(r"[,\s]+", rest.strip()) if w]
    if not _NAME_RE.fullmatch(name) or not words:
        raise ValueFormError(f"expected {_GROUP_FORM}")
    domains: list[str] = []
    for word in words:
        if word.startswith("$"):
            macro = macros.get(word[1:])
            if macro is None:
                raise ValueFormError(
                    f"unknown domain macro {word} (define it first, at top level: "
                    f"domain-macro {word[1:]} a.com,b.com)"
                )
            domains.extend(macro)
            continue
        domain = word.lower()
        if not domain_re.fullmatch(domain) or domain.startswith("{"):
            raise ValueFormError(f"invalid domain name {word!r} in {_GROUP_FORM}")
        domains.append(domain.rstrip("."))
    return DomainGroup(name=name, domains=tuple(dict.fromkeys(domains)), origin=_origin(token))


# ---------------------------------------------------------------- the block


def _diag(origin: Origin, directive: str, message: str, *, warning: bool = False) -> Diagnostic:
    return Diagnostic(
        file=origin.file,
        line=origin.line,
        directive=directive,
        message=message,
        severity=Severity.WARNING if warning else Severity.ERROR,
    )


def _check_groups(lines: Sequence[DomainGroup]) -> tuple[list[DomainGroup], list[Diagnostic]]:
    groups: list[DomainGroup] = []
    diags: list[Diagnostic] = []
    owner: dict[str, DomainGroup] = {}
    for group in lines:
        first = next((g for g in groups if g.name == group.name), None)
        if first is not None:
            diags.append(
                _diag(
                    group.origin,
                    "domain-group",
                    f"domain group {group.name} is already defined at {first.origin}; "
                    "list all its domains on one line",
                )
            )
            continue
        for domain in group.domains:
            other = owner.get(domain)
            if other is not None:
                diags.append(
                    _diag(
                        group.origin,
                        "domain-group",
                        f"{domain} is already in group {other.name} ({other.origin}); "
                        "a domain belongs to one group",
                    )
                )
            else:
                owner[domain] = group
        groups.append(group)
    return groups, diags


def _check_days(
    name: str,
    origin: Origin,
    days: Sequence[WarmupDay],
    groups: Sequence[DomainGroup],
    *,
    sequence: bool,
    references: bool,
) -> list[Diagnostic]:
    """Gaps and overlaps (when ``sequence``), unknown groups (when ``references``), caps
    above the total and groups never capped."""
    diags: list[Diagnostic] = []
    if not days:
        if sequence:
            diags.append(
                _diag(
                    origin,
                    "warmup-plan",
                    f"plan {name} has no day lines; add at least: day 1 TOTAL|* [GROUP=CAP ...]",
                )
            )
        return diags
    known = [g.name for g in groups]
    covered = 0
    covered_by: WarmupDay | None = None
    for day in days:
        if day.first > covered + 1 and sequence:
            gap = f"{covered + 1}" if day.first == covered + 2 else f"{covered + 1}-{day.first - 1}"
            diags.append(
                _diag(
                    day.origin,
                    "day",
                    f"plan {name} does not define day {gap}: days run from 1 without gaps "
                    f"(add a line: day {gap} TOTAL|* ...)",
                )
            )
        elif day.first <= covered and covered_by is not None and sequence:
            diags.append(
                _diag(
                    day.origin,
                    "day",
                    f"day {day.first} of plan {name} is already set at {covered_by.origin}; "
                    "each day has one line",
                )
            )
        if day.last > covered:
            covered, covered_by = day.last, day
        for group, cap in day.caps:
            if group not in known:
                if not references:
                    continue
                where = ("known: " + ", ".join(known)) if known else "the plan defines none"
                diags.append(
                    _diag(
                        day.origin,
                        "day",
                        f"unknown domain group {group!r} ({where}); define it in this "
                        f"<warmup-plan>: domain-group {group} DOMAIN,DOMAIN,...",
                    )
                )
            elif day.total is not None and cap > day.total:
                diags.append(
                    _diag(
                        day.origin,
                        "day",
                        f"{group}={cap} is above the day's overall cap {day.total}; "
                        "the overall cap limits it anyway",
                        warning=True,
                    )
                )
    capped = {name for day in days for name, _ in day.caps}
    for defined in groups:
        if defined.name not in capped:
            diags.append(
                _diag(
                    defined.origin,
                    "domain-group",
                    f"group {defined.name} is capped on no day; its mail counts towards the "
                    "overall cap only",
                    warning=True,
                )
            )
    return diags


def build_plan(
    name: str,
    origin: Origin,
    lines: Sequence[object],
    settings: Settings,
    failed: frozenset[str] = frozenset(),
) -> tuple[WarmupPlanDef, list[Diagnostic]]:
    """The plan of a closed ``<warmup-plan>`` block and its problems (the plan is returned
    even when it has errors, so that references to it are not reported as unknown).
    ``failed`` names the kinds of line (``day``, ``domain-group``) that had errors already
    reported: the checks that such a line would change are skipped, so that one mistake is
    reported once."""
    groups, diags = _check_groups([g for g in lines if isinstance(g, DomainGroup)])
    days = sorted((d for d in lines if isinstance(d, WarmupDay)), key=lambda d: d.first)
    diags.extend(
        _check_days(
            name,
            origin,
            days,
            groups,
            sequence="day" not in failed,
            references="domain-group" not in failed,
        )
    )
    plan = WarmupPlanDef(
        name=name, groups=tuple(groups), days=tuple(days), settings=settings, origin=origin
    )
    return plan, diags


# ---------------------------------------------------------------- whole-file checks


def _plan_users(config: Config) -> Iterator[tuple[str, WarmupPlanDef]]:
    for vmta in config.vmtas.values():
        s = vmta.settings.get("warmup-plan")
        if s is not None and isinstance(s.value, str):
            plan = config.warmup_plans.get(s.value)
            if plan is not None:
                yield vmta.name, plan


def check_vmta(name: str, settings: Settings, failed: Set[str]) -> list[Diagnostic]:
    """A closed ``<virtual-mta NAME>``: ``warmup-plan`` needs ``warmup-start`` (unless that
    line had an error of its own), and ``warmup-start`` alone is unused."""
    plan, start = settings.get("warmup-plan"), settings.get("warmup-start")
    has_plan = plan is not None and plan.value is not None
    has_start = start is not None and start.value is not None
    if plan is not None and plan.origin is not None and has_plan and not has_start:
        if "warmup-start" in failed:
            return []
        return [
            _diag(
                plan.origin,
                "warmup-plan",
                f"virtual-mta {name} has a warm-up plan but no start day; add "
                "warmup-start YYYY-MM-DD (day 1 of the ramp, 00:00 UTC) to it",
            )
        ]
    if start is not None and start.origin is not None and has_start and not has_plan:
        if "warmup-plan" in failed:
            return []
        return [
            _diag(
                start.origin,
                "warmup-start",
                f"virtual-mta {name} has no warmup-plan; this start day is unused",
                warning=True,
            )
        ]
    return []


def _check_plan_names(config: Config) -> Iterator[Diagnostic]:
    known = sorted(config.warmup_plans)
    for vmta in config.vmtas.values():
        plan = vmta.settings.get("warmup-plan")
        if plan is None or plan.origin is None or not isinstance(plan.value, str):
            continue
        if plan.value not in config.warmup_plans:
            where = ("known: " + ", ".join(known)) if known else "no <warmup-plan> is defined"
            yield _diag(plan.origin, "warmup-plan", f"unknown warmup-plan {plan.value!r} ({where})")


def _check_overflow(config: Config) -> Iterator[Diagnostic]:
    users: dict[str, list[str]] = {}
    for vmta, plan in _plan_users(config):
        users.setdefault(plan.name, []).append(vmta)
    for plan in config.warmup_plans.values():
        s = plan.settings.get("overflow-to-virtual-mta")
        target = plan.overflow_vmta
        if s is None or s.origin is None or target is None:
            continue
        if target not in config.vmtas and target not in config.pools:
            known = sorted({*config.vmtas, *config.pools})
            yield _diag(
                s.origin,
                "overflow-to-virtual-mta",
                f"unknown virtual-mta or pool {target!r} (known: {', '.join(known) or 'none'})",
            )
            continue
        for vmta in users.get(plan.name, []):
            if target == vmta:
                yield _diag(
                    s.origin,
                    "overflow-to-virtual-mta",
                    f"virtual-mta {vmta} uses plan {plan.name}: its overflow would come back "
                    "to it; name another VMTA or pool",
                )
            elif target in config.pools and vmta in config.pools[target].members:
                yield _diag(
                    s.origin,
                    "overflow-to-virtual-mta",
                    f"pool {target} includes {vmta}, which uses plan {plan.name}: part of its "
                    "overflow may come back to it",
                    warning=True,
                )


def _check_queue_to(config: Config) -> Iterator[Diagnostic]:
    seen: set[tuple[str, str]] = set()
    for vmta, plan in _plan_users(config):
        group_of = {d: g.name for g in plan.groups for d in g.domains}
        for group in plan.groups:
            for domain in group.domains:
                target = queue_target(config, domain, vmta)
                if target.cycle or target.target == domain or (plan.name, domain) in seen:
                    continue
                if group_of.get(target.target) == group.name:
                    continue
                seen.add((plan.name, domain))
                other = group_of.get(target.target)
                yield _diag(
                    group.origin,
                    "domain-group",
                    f"{domain} is queued as {target.target} on {vmta} (queue-to), which is "
                    + (f"in group {other}" if other else "in no group")
                    + f"; list {target.target} in group {group.name} to cap that queue",
                    warning=True,
                )


def check_warmup(config: Config) -> list[Diagnostic]:
    """Every whole-file problem of the warm-up plans and their use."""
    return [*_check_plan_names(config), *_check_overflow(config), *_check_queue_to(config)]
