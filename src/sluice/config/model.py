"""The configuration model: frozen, typed blocks as the loader builds them from the text.

A :class:`Setting` is one directive's typed value with the place that set it. Blocks keep
their own settings (what the file says, unresolved); :mod:`sluice.config.resolve` combines
them into the effective settings of a queue or a source.

Public names: Origin, Setting, Settings, BackoffRule, SmtpPatternList, InboundRule,
InboundPatternList, CategoryPattern, DomainBlock, VirtualMta, VmtaPool, SourceRule, SmtpUser,
AcctFile, SpoolDir, RewriteRule, RewriteList, Processor, SignalsBlock, Listener,
DomainGroup, WarmupDay, WarmupPlanDef, BOUNCE_CATEGORIES, DEFAULT_VMTA, json_value. Nothing
here raises.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.config.values import IPNetwork, Listen, Rate, SourceHost, format_rate

__all__ = [
    "BOUNCE_CATEGORIES",
    "DEFAULT_VMTA",
    "AcctFile",
    "BackoffRule",
    "CategoryPattern",
    "DomainBlock",
    "DomainGroup",
    "InboundPatternList",
    "InboundRule",
    "Listener",
    "Origin",
    "Processor",
    "RewriteList",
    "RewriteRule",
    "Setting",
    "Settings",
    "SignalsBlock",
    "SmtpPatternList",
    "SmtpUser",
    "SourceRule",
    "SpoolDir",
    "VirtualMta",
    "VmtaPool",
    "WarmupDay",
    "WarmupPlanDef",
    "json_value",
]

#: The VMTA of mail that names none; PowerMTA prints its queues as ``domain/{default}``.
DEFAULT_VMTA = "{default}"

#: Bounce categories (reference §4.2) plus ``success`` for 2.x.x patterns.
BOUNCE_CATEGORIES: frozenset[str] = frozenset(
    {
        "bad-configuration",
        "bad-connection",
        "bad-domain",
        "bad-mailbox",
        "content-related",
        "inactive-mailbox",
        "invalid-sender",
        "message-expired",
        "no-answer-from-host",
        "other",
        "policy-related",
        "protocol-errors",
        "quota-issues",
        "relaying-issues",
        "routing-errors",
        "spam-related",
        "virus-related",
        "success",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Where something was written: the file path as given, and the 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """A directive's typed value and where it came from (``origin`` None = built-in default).

    ``text`` is the canonical config text of the value. ``written_as`` is the directive as the
    file spelled it when that differs from ``name`` (an alias or a seed-dialect equivalent,
    e.g. ``max-msg-per-hour 5000`` for ``max-msg-rate 5000/h``). ``cleared`` marks ``""``. For
    repeatable directives ``value`` is a tuple of every occurrence, in file order.
    """

    name: str
    value: object
    text: str
    origin: Origin | None
    written_as: str | None = None
    cleared: bool = False

    @property
    def origin_text(self) -> str:
        return "default" if self.origin is None else str(self.origin)


Settings = Mapping[str, Setting]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffRule:
    """A reply rule: when a remote reply matches, what to do (first match wins).

    Inline seed rules (``421 RP-001 *, 1h, 5, 1000`` in a ``<domain>``) have ``code`` and
    ``literal``: a reply matches when its text starts with the code and the literal occurs
    in it as a case-sensitive substring; they put the queue in backoff mode for ``duration``
    with at most ``max_smtp_out`` connections and ``max_msg_rate`` messages. Rules from an
    ``<smtp-pattern-list>`` (``reply /re/ action…``) match by regular expression search.
    """

    pattern: re.Pattern[str]
    text: str
    origin: Origin
    list_name: str | None = None
    code: str | None = None
    literal: str | None = None
    mode: str | None = None
    duration: int | None = None
    max_smtp_out: int | None = None
    max_msg_rate: Rate | None = None
    disable_source_ip: bool = False
    reenable_after: int | None = None
    bounce_rcpt: bool = False

    def matches(self, reply: str) -> bool:
        """True when the remote reply text (code included, e.g. ``421 RP-001 …``) matches."""
        if self.code is not None and self.literal is not None:
            return reply.startswith(self.code) and self.literal in reply[len(self.code) :]
        return self.pattern.search(reply) is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "origin": str(self.origin),
            "list": self.list_name,
            "code": self.code,
            "literal": self.literal,
            "regex": self.pattern.pattern,
            "mode": self.mode,
            "duration": self.duration,
            "max_smtp_out": self.max_smtp_out,
            "max_msg_rate": None if self.max_msg_rate is None else format_rate(self.max_msg_rate),
            "disable_source_ip": self.disable_source_ip,
            "reenable_after": self.reenable_after,
            "bounce_rcpt": self.bounce_rcpt,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpPatternList:
    """``<smtp-pattern-list NAME>``: reply rules, first match wins."""

    name: str
    rules: tuple[BackoffRule, ...]
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundRule:
    """``mail-from /re/ virtual-mta=X`` (or ``rcpt-to``) in a ``<pattern-list>``."""

    field: str
    pattern: re.Pattern[str]
    actions: Mapping[str, str]
    origin: Origin

    @property
    def virtual_mta(self) -> str | None:
        return self.actions.get("virtual-mta")


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundPatternList:
    """``<pattern-list NAME>``: inbound rules applied at reception."""

    name: str
    rules: tuple[InboundRule, ...]
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryPattern:
    """``/re/ category`` in ``<bounce-category-patterns>`` (top-down, first match wins)."""

    pattern: re.Pattern[str]
    category: str
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainBlock:
    """``<domain a b …>``: ``names`` after macro expansion (``*`` for ``*``/``default``).

    ``container`` is None for a global block, else the VMTA or pool name it is nested in.
    """

    names: tuple[str, ...]
    written: tuple[str, ...]
    settings: Settings
    backoff_rules: tuple[BackoffRule, ...]
    origin: Origin
    container: str | None = None

    def matches(self, domain: str) -> bool:
        return domain in self.names

    @property
    def is_wildcard(self) -> bool:
        return "*" in self.names


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualMta:
    """``<virtual-mta NAME>``: its own settings and nested ``<domain>`` blocks."""

    name: str
    settings: Settings
    domains: tuple[DomainBlock, ...]
    origin: Origin

    @property
    def source_hosts(self) -> tuple[SourceHost, ...]:
        setting = self.settings.get("smtp-source-host")
        if setting is None or not isinstance(setting.value, tuple):
            return ()
        return tuple(v for v in setting.value if isinstance(v, SourceHost))


@dataclass(frozen=True, slots=True, kw_only=True)
class VmtaPool:
    """``<virtual-mta-pool NAME>``: member VMTAs (file order), settings, ``<domain>`` blocks."""

    name: str
    members: tuple[str, ...]
    settings: Settings
    domains: tuple[DomainBlock, ...]
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRule:
    """``<source CIDR>`` (``network``) or ``<source {name}>`` (``label``)."""

    network: IPNetwork | None
    label: str | None
    settings: Settings
    origin: Origin

    @property
    def match_text(self) -> str:
        if self.label is not None:
            return self.label
        assert self.network is not None
        return str(self.network)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpUser:
    """``<smtp-user NAME>``."""

    name: str
    settings: Settings
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctFile:
    """``<acct-file PATH>`` or ``<acct-file |command args>`` (exactly one of path/command)."""

    path: str | None
    command: str | None
    settings: Settings
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolDir:
    """``<spool PATH>``."""

    path: str
    settings: Settings
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteRule:
    """``FIELD PATTERN REPLACEMENT`` in a ``<rewrite-list>`` (``mail-from *@a.com *@b.com``)."""

    field: str
    pattern: str
    replacement: str
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteList:
    """``<rewrite-list NAME>``."""

    name: str
    rules: tuple[RewriteRule, ...]
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class Processor:
    """``<bounce-processor>`` or ``<feedback-loop-processor>`` with its address-list domains."""

    kind: str
    domains: tuple[str, ...]
    settings: Settings
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalsBlock:
    """``<signals>``."""

    settings: Settings
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """An SMTP injection listener (``smtp-listener`` line or ``<smtp-listener>`` block)."""

    listen: Listen
    settings: Settings
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainGroup:
    """``domain-group NAME DOMAINS`` in a ``<warmup-plan>``: domains capped together."""

    name: str
    #: Lower case, macros expanded, in the order written.
    domains: tuple[str, ...]
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupDay:
    """``day N[-M] TOTAL|* [GROUP=CAP …]``: the caps of days ``first``..``last`` (1-based).

    ``total`` caps the VMTA's messages that day (None: ``*``, no overall cap); ``caps`` cap
    the messages to each named domain group; a group not named has no cap of its own.
    """

    first: int
    last: int
    total: int | None
    caps: tuple[tuple[str, int], ...]
    text: str
    origin: Origin

    def cap(self, group: str) -> int | None:
        for name, cap in self.caps:
            if name == group:
                return cap
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupPlanDef:
    """``<warmup-plan NAME>`` (a Sluice extension, docs/shaping.md §6).

    ``days`` are sorted and, in a configuration that loaded, run from day 1 without gaps.
    ``settings`` holds the plan's option lines (``hold-if-deferral-rate``,
    ``hold-if-bounce-rate``, ``hold-min-sample``, ``overflow-to-virtual-mta``) as written;
    the properties below read them (None: not written).
    """

    name: str
    groups: tuple[DomainGroup, ...]
    days: tuple[WarmupDay, ...]
    settings: Settings
    origin: Origin

    @property
    def length(self) -> int:
        """Days in the ramp (after the last one the plan sets no caps)."""
        return self.days[-1].last if self.days else 0

    def group(self, name: str) -> DomainGroup | None:
        for group in self.groups:
            if group.name == name:
                return group
        return None

    def day(self, number: int) -> WarmupDay | None:
        """The line that sets day ``number`` (1-based), None past the end."""
        for day in self.days:
            if day.first <= number <= day.last:
                return day
        return None

    def _value(self, name: str) -> object:
        s = self.settings.get(name)
        return None if s is None else s.value

    @property
    def hold_deferral_percent(self) -> float | None:
        value = self._value("hold-if-deferral-rate")
        return value if isinstance(value, float) else None

    @property
    def hold_bounce_percent(self) -> float | None:
        value = self._value("hold-if-bounce-rate")
        return value if isinstance(value, float) else None

    @property
    def min_sample(self) -> int | None:
        value = self._value("hold-min-sample")
        return value if isinstance(value, int) else None

    @property
    def overflow_vmta(self) -> str | None:
        value = self._value("overflow-to-virtual-mta")
        return value if isinstance(value, str) and value else None

    def as_dict(self) -> dict[str, object]:
        """The JSON form (for ``check-config --json``)."""
        return {
            "name": self.name,
            "origin": str(self.origin),
            "days": self.length,
            "domain_groups": {g.name: list(g.domains) for g in self.groups},
            "steps": [
                {
                    "days": [d.first, d.last],
                    "total": d.total,
                    "caps": dict(d.caps),
                    "origin": str(d.origin),
                }
                for d in self.days
            ],
            "hold_if_deferral_rate": self.hold_deferral_percent,
            "hold_if_bounce_rate": self.hold_bounce_percent,
            "hold_min_sample": self.min_sample,
            "overflow_to_virtual_mta": self.overflow_vmta,
        }

    def describe(self) -> str:
        """One line for ``check-config``: length, groups, hold rules, overflow."""
        parts = [f"{self.length} days"]
        if self.days:
            first, last = self.days[0], self.days[-1]
            parts[0] += (
                f", overall cap {_total_text(first.total)} on day 1 to "
                f"{_total_text(last.total)} on day {last.last}"
            )
        if self.groups:
            parts.append("groups " + ", ".join(g.name for g in self.groups))
        holds = [
            f"{what} > {value:g}%"
            for what, value in (
                ("deferrals", self.hold_deferral_percent),
                ("bounces", self.hold_bounce_percent),
            )
            if value is not None
        ]
        if holds:
            parts.append("hold if " + " or ".join(holds))
        overflow = self.overflow_vmta
        parts.append(f"overflow to {overflow}" if overflow else "over the cap waits")
        return "; ".join(parts)


def _total_text(total: int | None) -> str:
    return "*" if total is None else str(total)


def json_value(value: object) -> object:
    """A JSON-ready form of a typed value (dataclasses become objects, addresses strings)."""
    match value:
        case None | bool() | int() | float() | str():
            return value
        case tuple() | list():
            return [json_value(v) for v in value]
        case re.Pattern():
            return value.pattern
        case (
            ipaddress.IPv4Address()
            | ipaddress.IPv6Address()
            | ipaddress.IPv4Network()
            | ipaddress.IPv6Network()
        ):
            return str(value)
        case _ if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
        case _:
            return str(value)
