"""Line parsers for pattern blocks and the seed's inline backoff rules.

- ``<domain>``: ``CODE TEXT *, DURATION, CONNECTIONS, MESSAGES_PER_HOUR`` (seed dialect).
- ``<smtp-pattern-list>``: ``reply /REGEX/ ACTION…`` with actions ``mode=backoff|normal``,
  ``backoff-to-normal-after=T``, ``disable-source-ip``, ``reenable-after=T``, ``bounce-rcpt``.
- ``<pattern-list>``: ``mail-from /REGEX/ virtual-mta=NAME`` (also ``rcpt-to``).
- ``<bounce-category-patterns>``: ``/REGEX/ category``.
- ``<rewrite-list>``: ``FIELD PATTERN REPLACEMENT``.

Public names: INLINE_RULE_FORM, is_inline_rule, parse_inline_rule, parse_reply_rule,
parse_inbound_rule, parse_category_pattern, parse_rewrite_rule, split_regex. Each parser
raises :class:`~sluice.config.values.ValueFormError` naming the expected form.
"""

from __future__ import annotations

import re

from sluice.config.lexer import Token
from sluice.config.model import (
    BOUNCE_CATEGORIES,
    BackoffRule,
    CategoryPattern,
    InboundRule,
    Origin,
    RewriteRule,
)
from sluice.config.values import (
    Rate,
    ValueFormError,
    format_duration,
    parse_duration,
    parse_regex,
)

__all__ = [
    "INLINE_RULE_FORM",
    "is_inline_rule",
    "parse_category_pattern",
    "parse_inbound_rule",
    "parse_inline_rule",
    "parse_reply_rule",
    "parse_rewrite_rule",
    "split_regex",
]

INLINE_RULE_FORM = (
    "CODE TEXT *, DURATION, CONNECTIONS, MESSAGES_PER_HOUR (e.g. 421 RP-001 *, 1h, 5, 1000)"
)
_REPLY_ACTIONS = (
    "mode=backoff|normal, backoff-to-normal-after=T, disable-source-ip, reenable-after=T, "
    "bounce-rcpt"
)
_INBOUND_FIELDS = ("mail-from", "rcpt-to")
_INBOUND_ACTIONS = ("virtual-mta",)
_CODE_RE = re.compile(r"[0-9]{3}")
_INLINE_CODE_RE = re.compile(r"[45][0-9]{2}")


def is_inline_rule(token: Token) -> bool:
    """A line in a ``<domain>`` whose first word is a 3-digit reply code."""
    return _CODE_RE.fullmatch(token.name) is not None


def split_regex(text: str) -> tuple[str, str]:
    """``/re/ rest`` → (``re``, ``rest``); ``\\/`` inside the regex does not end it."""
    t = text.lstrip()
    if not t.startswith("/"):
        raise ValueFormError(f"expected a /regular expression/, got {t[:40]!r}")
    i = 1
    while i < len(t):
        if t[i] == "\\":
            i += 2
            continue
        if t[i] == "/":
            break
        i += 1
    else:
        raise ValueFormError("regular expression has no closing /")
    rest = t[i + 1 :]
    if rest and not rest[0].isspace():
        raise ValueFormError(
            f"expected a space after the closing / of the regular expression, got {rest[:20]!r}"
        )
    return t[1:i], rest.strip()


def _origin(token: Token) -> Origin:
    return Origin(file=token.file, line=token.line)


def parse_inline_rule(token: Token) -> BackoffRule:
    """``421 RP-001 *, 1h, 5, 1000`` → a backoff rule (1h, 5 connections, 1000/h)."""
    bad = ValueFormError(f"malformed backoff rule: expected {INLINE_RULE_FORM}")
    if not _INLINE_CODE_RE.fullmatch(token.name):
        raise ValueFormError(f"backoff rule code must be 4xx or 5xx: expected {INLINE_RULE_FORM}")
    parts = [p.strip() for p in token.rest.split(",")]
    if len(parts) != 4 or not parts[0].endswith("*"):
        raise bad
    literal = parts[0][:-1].strip()
    try:
        duration = parse_duration(parts[1])
    except ValueFormError as exc:
        raise ValueFormError(f"{exc}; expected {INLINE_RULE_FORM}") from None
    if not parts[2].isdigit() or not parts[3].isdigit() or len(parts[2] + parts[3]) > 15:
        raise bad
    conns, per_hour = int(parts[2]), int(parts[3])
    if per_hour == 0:
        raise ValueFormError(f"messages per hour must be above 0: expected {INLINE_RULE_FORM}")
    code = token.name
    pattern = re.compile("^" + re.escape(code) + ".*?" + re.escape(literal), re.S)
    shown = f"{code} {literal} *" if literal else f"{code} *"
    return BackoffRule(
        pattern=pattern,
        text=f"{shown}, {format_duration(duration)}, {conns}, {per_hour}",
        origin=_origin(token),
        code=code,
        literal=literal,
        mode="backoff",
        duration=duration,
        max_smtp_out=conns,
        max_msg_rate=Rate(count=per_hour, seconds=3600),
    )


def _duration_action(key: str, value: str) -> int | None:
    if value.lower() == "never":
        return None
    try:
        return parse_duration(value)
    except ValueFormError as exc:
        raise ValueFormError(f"{key}: {exc}") from None


def parse_reply_rule(token: Token, list_name: str) -> BackoffRule:
    """``reply /re/ mode=backoff …`` in ``<smtp-pattern-list list_name>``."""
    if token.name != "reply":
        raise ValueFormError(f"expected reply /REGEX/ ACTION..., got {token.name!r}")
    body, rest = split_regex(token.rest)
    pattern = parse_regex(f"/{body}/")
    fields: dict[str, object] = {}
    actions = rest.split()
    if not actions:
        raise ValueFormError(f"reply rule has no action; actions: {_REPLY_ACTIONS}")
    for action in actions:
        key, eq, value = action.partition("=")
        match (key.lower(), bool(eq)):
            case ("mode", True) if value.lower() in ("backoff", "normal"):
                fields["mode"] = value.lower()
            case ("backoff-to-normal-after", True):
                fields["duration"] = _duration_action(key, value)
            case ("reenable-after", True):
                fields["reenable_after"] = _duration_action(key, value)
            case ("disable-source-ip", False):
                fields["disable_source_ip"] = True
            case ("bounce-rcpt", False):
                fields["bounce_rcpt"] = True
            case _:
                raise ValueFormError(f"unknown action {action!r}; actions: {_REPLY_ACTIONS}")
    duration = fields.get("duration")
    reenable = fields.get("reenable_after")
    mode = fields.get("mode")
    return BackoffRule(
        pattern=pattern,
        text=token.text,
        origin=_origin(token),
        list_name=list_name,
        mode=mode if isinstance(mode, str) else None,
        duration=duration if isinstance(duration, int) else None,
        disable_source_ip=bool(fields.get("disable_source_ip", False)),
        reenable_after=reenable if isinstance(reenable, int) else None,
        bounce_rcpt=bool(fields.get("bounce_rcpt", False)),
    )


def parse_inbound_rule(token: Token) -> InboundRule:
    """``mail-from /re/ virtual-mta=X`` (or ``rcpt-to``) in a ``<pattern-list>``."""
    if token.name not in _INBOUND_FIELDS:
        raise ValueFormError(
            f"expected mail-from|rcpt-to /REGEX/ virtual-mta=NAME, got {token.name!r}"
        )
    body, rest = split_regex(token.rest)
    pattern = parse_regex(f"/{body}/")
    actions: dict[str, str] = {}
    for action in rest.split():
        key, eq, value = action.partition("=")
        if not eq or key.lower() not in _INBOUND_ACTIONS or not value:
            raise ValueFormError(f"unknown action {action!r}; expected virtual-mta=NAME")
        actions[key.lower()] = value
    if not actions:
        raise ValueFormError("rule has no action; expected virtual-mta=NAME")
    return InboundRule(field=token.name, pattern=pattern, actions=actions, origin=_origin(token))


def parse_category_pattern(token: Token) -> CategoryPattern:
    """``/re/ category`` in ``<bounce-category-patterns>``."""
    body, rest = split_regex(token.text)
    pattern = parse_regex(f"/{body}/")
    words = rest.split()
    if len(words) != 1:
        raise ValueFormError("expected /REGEX/ CATEGORY")
    category = words[0].lower()
    if category not in BOUNCE_CATEGORIES:
        raise ValueFormError(
            f"unknown bounce category {words[0]!r}; one of: {', '.join(sorted(BOUNCE_CATEGORIES))}"
        )
    return CategoryPattern(pattern=pattern, category=category, origin=_origin(token))


def parse_rewrite_rule(token: Token) -> RewriteRule:
    """``FIELD PATTERN REPLACEMENT`` such as ``mail-from *@a.com *@b.com``."""
    if not re.fullmatch(r"[a-z][a-z-]*", token.name) or len(token.args) != 2:
        raise ValueFormError("expected FIELD PATTERN REPLACEMENT such as mail-from *@a.com *@b.com")
    return RewriteRule(
        field=token.name, pattern=token.args[0], replacement=token.args[1], origin=_origin(token)
    )
