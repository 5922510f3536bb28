"""The configuration model: frozen, typed blocks as the loader builds them from the text.

A :class:`Setting` is one directive's typed value with the place that set it. Blocks keep
their own settings (what the file says, unresolved); :mod:`sluice.config.resolve` combines
them into the effective settings of a queue or a source.

Public names: Origin, Setting, Settings, BackoffRule, SmtpPatternList, InboundRule,
InboundPatternList, CategoryPattern, DomainBlock, VirtualMta, VmtaPool, SourceRule, SmtpUser,
AcctFile, SpoolDir, RewriteRule, RewriteList, Processor, SignalsBlock, Listener,
BOUNCE_CATEGORIES, DEFAULT_VMTA, json_value. Nothing here raises.
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
