"""Value syntaxes of the config language: parse text to typed values and format them back.

Every value kind named in the directive table has a parser and a canonical formatter, and
``parse(kind, format(kind, v)) == v`` for every value a parser can return. Kinds may carry a
parameter after a colon: ``enum:a|b|c`` (the choices) and ``int:LO..HI`` (a range).

Representations: durations are whole seconds (``int``); ``never`` and ``unlimited`` are
``None``; rates are :class:`Rate` (``0`` and ``unlimited`` are ``None``); sizes are bytes;
addresses and CIDRs are :mod:`ipaddress` objects; ``date`` is a :class:`datetime.date`;
``percent-decimal`` is a ``float`` in percent.

Public names: Rate, VolumeRate, HostPort, Listen, SourceHost, DomainKey, RecordFields,
HttpAccess, CidrValue, BASE_KINDS, RECORD_TYPES, parse_value, format_value, kind_is_known,
parse_duration, format_duration, parse_rate, format_rate, parse_size, format_size,
parse_cidr, parse_regex. Parsers raise :class:`ValueFormError` (a ``ValueError``) naming the
expected form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sluice.config._values_base import MAX_INT, ValueFormError, exact_words, fail, parse_uint
from sluice.config._values_extra import (
    format_date,
    format_percent_decimal,
    parse_date,
    parse_percent_decimal,
)
from sluice.config._values_net import (
    HostPort,
    HttpAccess,
    IPAddress,
    IPNetwork,
    Listen,
    SourceHost,
    format_cidr,
    format_host_port,
    format_listen,
    format_source_host,
    parse_cidr,
    parse_host_list,
    parse_host_port,
    parse_http_access,
    parse_ip,
    parse_listen,
    parse_port,
    parse_source_host,
)
from sluice.config._values_text import (
    format_regex,
    parse_email,
    parse_header_name,
    parse_name,
    parse_path,
    parse_regex,
    parse_string,
    parse_word,
)

__all__ = [
    "BASE_KINDS",
    "RECORD_TYPES",
    "CidrValue",
    "DomainKey",
    "HostPort",
    "HttpAccess",
    "IPAddress",
    "IPNetwork",
    "Listen",
    "Rate",
    "RecordFields",
    "SourceHost",
    "ValueFormError",
    "VolumeRate",
    "format_duration",
    "format_rate",
    "format_size",
    "format_value",
    "kind_is_known",
    "parse_cidr",
    "parse_duration",
    "parse_rate",
    "parse_regex",
    "parse_size",
    "parse_value",
]

CidrValue = IPNetwork


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_UNITS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hr": 3600,
    "d": 86400,
    "day": 86400,
}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_BOOL_WORDS = {"yes": True, "true": True, "no": False, "false": False}

#: Accounting record types (reference §5.1) and their long forms.
RECORD_TYPES: dict[str, str] = {
    "d": "d",
    "delivery": "d",
    "b": "b",
    "bounce": "b",
    "t": "t",
    "transient": "t",
    "tq": "tq",
    "transient-queue": "tq",
    "r": "r",
    "receipt": "r",
    "f": "f",
    "feedback-loop": "f",
    "rb": "rb",
    "remote-bounce": "rb",
    "rs": "rs",
    "remote-status": "rs",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """``count`` events per ``seconds`` (``3/5m`` is count=3, seconds=300)."""

    count: int
    seconds: int

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeRate:
    """``size`` bytes per ``seconds``."""

    size: int
    seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainKey:
    """``domain-key SELECTOR,DOMAIN,KEYFILE``; domain ``*`` signs every domain."""

    selector: str
    domain: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFields:
    """``record-fields TYPE f1,f2`` (``*`` stands for the default field set)."""

    record: str
    fields: tuple[str, ...]


# ---------------------------------------------------------------- durations


_DURATION_RE = re.compile(r"(?:[0-9]+[dhms])+")


def parse_duration(text: str) -> int:
    """``4d12h``, ``30m``, ``45s`` or ``0`` → seconds."""
    t = text.strip().lower()
    if t == "0":
        return 0
    if not _DURATION_RE.fullmatch(t):
        raise fail("a duration such as 30m, 4d12h or 45s", text)
    total = 0
    for number, unit in re.findall(r"([0-9]+)([dhms])", t):
        total += parse_uint(number, "a duration") * _SECONDS[unit]
    if total > MAX_INT:
        raise ValueFormError(f"{text} is too long")
    return total


def format_duration(seconds: int) -> str:
    """Seconds → the shortest ``4d12h30m5s`` form (``0s`` for zero)."""
    if seconds == 0:
        return "0s"
    out = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


def _parse_duration_or_never(text: str) -> int | None:
    return None if text.strip().lower() == "never" else parse_duration(text)


def _format_duration_or_never(value: object) -> str:
    return "never" if value is None else format_duration(_as_int(value))


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _parse_duration_list(text: str) -> tuple[int, ...]:
    parts = _split_list(text)
    if not parts or any(not p for p in parts):
        raise fail("a comma-separated list of durations such as 10m,20m,1h", text)
    return tuple(parse_duration(p) for p in parts)


def _parse_duration_or_bool(text: str) -> bool | int | None:
    t = text.strip().lower()
    if t in _BOOL_WORDS:
        return _BOOL_WORDS[t]
    if t == "never":
        return None
    try:
        return parse_duration(t)
    except ValueFormError:
        raise fail("true, false, never or a duration such as 1h", text) from None


def _format_duration_or_bool(value: object) -> str:
    if value is None:
        return "never"
    if isinstance(value, bool):
        return "true" if value else "false"
    return format_duration(_as_int(value))


# ---------------------------------------------------------------- rates and sizes


_RATE_RE = re.compile(r"([0-9]+)/([0-9]*)([a-z]+)")


def parse_rate(text: str) -> Rate | None:
    """``1000/h``, ``3/5m``, ``200/s``; ``unlimited`` and ``0`` → None (no limit)."""
    t = text.strip().lower()
    if t in ("unlimited", "0"):
        return None
    m = _RATE_RE.fullmatch(t)
    if m is None or m.group(3) not in _RATE_UNITS:
        raise fail("a rate such as 1000/h, 3/5m, 200/s, 0 or unlimited", text)
    count = parse_uint(m.group(1), "a rate")
    mult = parse_uint(m.group(2), "a rate") if m.group(2) else 1
    if count == 0 or mult == 0:
        raise fail("a non-zero rate such as 1000/h (or 0 / unlimited for none)", text)
    return Rate(count=count, seconds=mult * _RATE_UNITS[m.group(3)])


def _format_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n}{unit}"
    return "s" if seconds == 1 else f"{seconds}s"


def format_rate(value: Rate | None) -> str:
    if value is None:
        return "unlimited"
    return f"{value.count}/{_format_interval(value.seconds)}"


_SIZE_RE = re.compile(r"([0-9]+)([bkmgt]?)")


def parse_size(text: str) -> int | None:
    """``50M``, ``1G``, ``4096``, ``0`` → bytes (K = 1024); ``unlimited`` → None."""
    t = text.strip().lower()
    if t == "unlimited":
        return None
    m = _SIZE_RE.fullmatch(t)
    if m is None:
        raise fail("a size such as 50M, 1G, 4096 or unlimited", text)
    return parse_uint(m.group(1), "a size") * _SIZE_UNITS[m.group(2)]


def format_size(value: int | None) -> str:
    if value is None:
        return "unlimited"
    if value == 0:
        return "0"
    for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _parse_volume_rate(text: str) -> VolumeRate | None:
    t = text.strip().lower()
    if t in ("unlimited", "0"):
        return None
    size_text, sep, per = t.partition("/")
    rate = parse_rate(f"1/{per}") if sep else None
    size = parse_size(size_text) if sep else None
    if rate is None or not size:
        raise fail("a data rate such as 10M/h or unlimited", text)
    return VolumeRate(size=size, seconds=rate.seconds)


def _format_volume_rate(value: object) -> str:
    if value is None:
        return "unlimited"
    assert isinstance(value, VolumeRate)
    return f"{format_size(value.size)}/{_format_interval(value.seconds)}"


def _parse_daily_limit(text: str) -> int:
    t = text.strip().lower()
    m = re.fullmatch(r"([0-9]+)/(d|day)", t)
    if m is None:
        raise fail("a daily limit such as 500/day", text)
    return parse_uint(m.group(1), "a daily limit")


def _parse_cidr_int(text: str) -> tuple[IPNetwork, int | None]:
    cidr, number = exact_words(text, 2, "CIDR NUMBER such as 10.0.0.0/24 5")
    return parse_cidr(cidr), _parse_int_or_unlimited(number)


def _parse_cidr_rate(text: str) -> tuple[IPNetwork, Rate | None]:
    cidr, rate = exact_words(text, 2, "CIDR RATE such as 10.0.0.0/24 100/h")
    return parse_cidr(cidr), parse_rate(rate)


def _parse_domain_key(text: str) -> DomainKey:
    parts = _split_list(text)
    if len(parts) != 3 or not all(parts):
        raise fail("SELECTOR,DOMAIN,KEYFILE such as s1,example.com,/etc/dkim/s1.pem", text)
    return DomainKey(selector=parts[0], domain=parts[1].lower(), path=parts[2])


def _format_domain_key(value: object) -> str:
    assert isinstance(value, DomainKey)
    return f"{value.selector},{value.domain},{value.path}"


# ---------------------------------------------------------------- words and lists


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t not in _BOOL_WORDS:
        raise fail("yes, no, true or false", text)
    return _BOOL_WORDS[t]


def _parse_int_or_unlimited(text: str) -> int | None:
    t = text.strip().lower()
    if t == "unlimited":
        return None
    return parse_uint(t, "a whole number or unlimited")


def _parse_percent(text: str) -> int:
    t = text.strip().removesuffix("%")
    value = parse_uint(t, "a percentage 0-100")
    if value > 100:
        raise fail("a percentage 0-100", text)
    return value


def _parse_email_list(text: str) -> tuple[str, ...]:
    return tuple(parse_email(p) for p in _split_list(text))


def _parse_record_list(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in _split_list(text):
        if part.lower() not in RECORD_TYPES:
            raise fail("record types from d,b,t,tq,r,f,rb,rs", part)
        out.append(RECORD_TYPES[part.lower()])
    return tuple(out)


def _parse_record_fields(text: str) -> RecordFields:
    words = text.split(None, 1)
    if len(words) != 2 or words[0].lower() not in RECORD_TYPES:
        raise fail("TYPE FIELD,FIELD such as d *,header_X-Id", text)
    fields = tuple(f for f in _split_list(words[1]))
    if any(not f or not re.fullmatch(r"\*|[A-Za-z][A-Za-z0-9_-]*", f) for f in fields):
        raise fail("field names separated by commas", words[1])
    return RecordFields(record=RECORD_TYPES[words[0].lower()], fields=fields)


def _as_int(value: object) -> int:
    assert isinstance(value, int)
    return value


# ---------------------------------------------------------------- dispatch tables

Parser = Callable[[str], object]
Formatter = Callable[[object], str]


def _str(value: object) -> str:
    return str(value)


def _fmt_bool(value: object) -> str:
    return "yes" if value else "no"


def _fmt_int_or_unlimited(value: object) -> str:
    return "unlimited" if value is None else str(value)


def _fmt_duration(value: object) -> str:
    return format_duration(_as_int(value))


def _fmt_duration_list(value: object) -> str:
    assert isinstance(value, tuple)
    return ",".join(format_duration(v) for v in value)


def _fmt_rate(value: object) -> str:
    assert value is None or isinstance(value, Rate)
    return format_rate(value)


def _fmt_size(value: object) -> str:
    assert value is None or isinstance(value, int)
    return format_size(value)


def _fmt_list(value: object) -> str:
    assert isinstance(value, tuple)
    return ",".join(str(v) for v in value)


def _fmt_host_list(value: object) -> str:
    assert isinstance(value, tuple)
    return ",".join(format_host_port(v) for v in value)


def _fmt_cidr_pair(value: object) -> str:
    assert isinstance(value, tuple)
    net, second = value
    if second is None or isinstance(second, int):
        return f"{format_cidr(net)} {_fmt_int_or_unlimited(second)}"
    return f"{format_cidr(net)} {_fmt_rate(second)}"


def _fmt_record_fields(value: object) -> str:
    assert isinstance(value, RecordFields)
    return f"{value.record} {','.join(value.fields)}"


def _fmt_http_access(value: object) -> str:
    assert isinstance(value, HttpAccess)
    return f"{format_cidr(value.network)} {value.level}"


_PARSERS: dict[str, Parser] = {
    "bool": _parse_bool,
    "int": lambda t: parse_uint(t.strip(), "a whole number"),
    "int-or-unlimited": _parse_int_or_unlimited,
    "percent": _parse_percent,
    "percent-decimal": parse_percent_decimal,
    "date": parse_date,
    "port": parse_port,
    "duration": parse_duration,
    "duration-or-never": _parse_duration_or_never,
    "duration-list": _parse_duration_list,
    "rate": parse_rate,
    "volume-rate": _parse_volume_rate,
    "daily-limit": _parse_daily_limit,
    "size": parse_size,
    "string": parse_string,
    "word": parse_word,
    "name": parse_name,
    "email": parse_email,
    "path": parse_path,
    "address": parse_ip,
    "cidr": parse_cidr,
    "listen": parse_listen,
    "host-port": parse_host_port,
    "host-list": parse_host_list,
    "cidr-int": _parse_cidr_int,
    "cidr-rate": _parse_cidr_rate,
    "source-host": parse_source_host,
    "domain-key": _parse_domain_key,
    "regex": parse_regex,
    "record-list": _parse_record_list,
    "record-fields": _parse_record_fields,
    "http-access": parse_http_access,
    "duration-or-bool": _parse_duration_or_bool,
    "email-list": _parse_email_list,
    "header-name": parse_header_name,
}

_FORMATTERS: dict[str, Formatter] = {
    "bool": _fmt_bool,
    "int": _str,
    "int-or-unlimited": _fmt_int_or_unlimited,
    "percent": _str,
    "percent-decimal": format_percent_decimal,
    "date": format_date,
    "port": _str,
    "duration": _fmt_duration,
    "duration-or-never": _format_duration_or_never,
    "duration-list": _fmt_duration_list,
    "rate": _fmt_rate,
    "volume-rate": _format_volume_rate,
    "daily-limit": lambda v: f"{v}/day",
    "size": _fmt_size,
    "string": _str,
    "word": _str,
    "name": _str,
    "email": _str,
    "path": _str,
    "address": _str,
    "cidr": format_cidr,
    "listen": format_listen,
    "host-port": format_host_port,
    "host-list": _fmt_host_list,
    "cidr-int": _fmt_cidr_pair,
    "cidr-rate": _fmt_cidr_pair,
    "source-host": format_source_host,
    "domain-key": _format_domain_key,
    "regex": format_regex,
    "record-list": _fmt_list,
    "record-fields": _fmt_record_fields,
    "http-access": _fmt_http_access,
    "duration-or-bool": _format_duration_or_bool,
    "email-list": _fmt_list,
    "header-name": _str,
    "enum": _str,
}

#: Every base kind (the part before any ``:``) the table may use.
BASE_KINDS: frozenset[str] = frozenset(_FORMATTERS)


def _split_kind(kind: str) -> tuple[str, str | None]:
    base, sep, param = kind.partition(":")
    return base, (param if sep else None)


def kind_is_known(kind: str) -> bool:
    """True when ``kind`` names a base kind with a well-formed parameter."""
    base, param = _split_kind(kind)
    if base == "enum":
        return param is not None and all(param.split("|"))
    if base == "int" and param is not None:
        return re.fullmatch(r"[0-9]+\.\.[0-9]+", param) is not None
    return base in BASE_KINDS and param is None


def _parse_enum(choices: str, text: str) -> str:
    options = choices.split("|")
    t = text.strip().lower()
    if t in options:
        return t
    if t in _BOOL_WORDS and {"yes", "no"} <= set(options):
        return "yes" if _BOOL_WORDS[t] else "no"
    raise fail("one of " + ", ".join(options), text)


def parse_value(kind: str, text: str) -> object:
    """Parse ``text`` as ``kind``; raises :class:`ValueFormError` naming the expected form."""
    base, param = _split_kind(kind)
    if base == "enum":
        return _parse_enum(param or "", text)
    if base == "int" and param is not None:
        lo, hi = (int(x) for x in param.split(".."))
        value = parse_uint(text.strip(), f"a whole number {lo}-{hi}")
        if not lo <= value <= hi:
            raise fail(f"a whole number {lo}-{hi}", text)
        return value
    parser = _PARSERS.get(base)
    if parser is None:
        raise ValueFormError(f"unknown value kind {kind!r}")
    return parser(text)


def format_value(kind: str, value: object) -> str:
    """The canonical config text of ``value``; ``parse_value(kind, result) == value``."""
    base, _ = _split_kind(kind)
    formatter = _FORMATTERS.get(base)
    if formatter is None:
        raise ValueFormError(f"unknown value kind {kind!r}")
    return formatter(value)
