"""Accounting records in PowerMTA's CSV format: record types, fields, layouts, rows (pure).

A file's ``records`` line picks record types (default ``d,b``); ``record-fields TYPE LIST``
picks each type's columns, where ``*`` stands for the default set. As PowerMTA's guide
describes, one file carries ONE header line whose columns are the union of the selected types'
fields (in order of first appearance, ``type`` always first); a row leaves the columns its
type does not use empty. Times are written ``YYYY-MM-DD HH:MM:SS+ZZZZ`` in the zone passed in.
Values are quoted as RFC 4180 says (a field with a comma, double quote, CR or LF is enclosed in
double quotes, inner quotes doubled); rows end with LF.

Public names:
    RecordType, DEFAULT_FIELDS, FEEDBACK_FIELDS, DEFAULT_LAYOUT, AcctRecord
    parse_record_types(text)           -> frozenset[RecordType]        raises AcctConfigError
    parse_field_list(text)             -> tuple[str, ...]              raises AcctConfigError
    AcctLayout.build(records, fields)  -> AcctLayout                   raises AcctConfigError
    AcctLayout.header() / .row(record, tz) / .wants(type)
    TimeFormatter(tz).text(epoch), format_time(epoch, tz), dsn_status_text(status)
    csv_field(value), csv_line(values)
    format_row(record, fields, tz)     -> str (one CSV line, no header)
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from sluice.errors import ConfigError

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_LAYOUT",
    "FEEDBACK_FIELDS",
    "AcctConfigError",
    "AcctLayout",
    "AcctRecord",
    "RecordType",
    "TimeFormatter",
    "csv_field",
    "csv_line",
    "dsn_status_text",
    "format_row",
    "format_time",
    "parse_field_list",
    "parse_record_types",
]


class AcctConfigError(ConfigError):
    """An ``<acct-file>`` setting names an unknown record type or field."""


class RecordType(enum.Enum):
    """Accounting record types, by PowerMTA's one/two-letter names (powermta.md §5.1)."""

    #: Delivered to the remote MTA.
    DELIVERY = "d"
    #: Bounced: permanent failure or expiry.
    BOUNCE = "b"
    #: A transient failure of one recipient (``log-delivery-failures``).
    TRANSIENT = "t"
    #: A transient failure of the whole queue (DNS, connection), per queue and attempt.
    TRANSIENT_QUEUE = "tq"
    #: Received (injected) recipient.
    RECEIVED = "r"
    #: Feedback-loop (complaint) report.
    FEEDBACK = "f"
    #: Remote bounce (an asynchronous DSN that came back).
    REMOTE_BOUNCE = "rb"


#: Long names accepted in ``records`` / ``record-fields`` (``record-fields delivery *`` is seen
#: in public configs); the short names are what the ``type`` column holds.
_TYPE_ALIASES: dict[str, RecordType] = {
    "delivery": RecordType.DELIVERY,
    "delivered": RecordType.DELIVERY,
    "bounce": RecordType.BOUNCE,
    "bounced": RecordType.BOUNCE,
    "transient": RecordType.TRANSIENT,
    "transient-queue": RecordType.TRANSIENT_QUEUE,
    "receipt": RecordType.RECEIVED,
    "received": RecordType.RECEIVED,
    "feedback": RecordType.FEEDBACK,
    "feedback-loop": RecordType.FEEDBACK,
    "remote-bounce": RecordType.REMOTE_BOUNCE,
}

#: The order types are laid out in when several share a file.
_TYPE_ORDER = tuple(RecordType)

#: PowerMTA's default columns (powermta.md §5.2; DESIGN.md §4), exactly in this order.
DEFAULT_FIELDS: tuple[str, ...] = (
    "type",
    "timeLogged",
    "timeQueued",
    "orig",
    "rcpt",
    "orcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "srcType",
    "srcMta",
    "dlvType",
    "dlvSourceIp",
    "dlvDestinationIp",
    "dlvEsmtpAvailable",
    "dlvSize",
    "vmta",
    "jobId",
    "envId",
    "queue",
    "vmtaPool",
)

#: Default columns of ``f`` records (Sluice's choice; PowerMTA's own list is not public).
FEEDBACK_FIELDS: tuple[str, ...] = (
    "type",
    "timeLogged",
    "orig",
    "rcpt",
    "feedbackType",
    "format",
    "userAgent",
    "reportingMta",
    "reportedDomain",
    "repSourceIp",
    "rcvSourceIp",
    "vmta",
    "jobId",
    "envId",
)

_DEFAULT_RECORDS = frozenset({RecordType.DELIVERY, RecordType.BOUNCE})


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctRecord:
    """Everything any record type can report about one recipient; unused fields stay empty.

    Times are epoch seconds (float); ``headers`` holds (name, value) pairs for ``header_NAME``
    columns (names compared without regard to case).
    """

    type: RecordType
    time_logged: float
    time_queued: float | None = None
    time_first_attempt: float | None = None
    orig: str = ""
    rcpt: str = ""
    orcpt: str = ""
    dsn_action: str = ""
    dsn_status: str = ""
    dsn_diag: str = ""
    dsn_mta: str = ""
    bounce_cat: str = ""
    src_type: str = ""
    src_mta: str = ""
    dlv_type: str = ""
    dlv_source_ip: str = ""
    dlv_destination_ip: str = ""
    dlv_esmtp_available: str = ""
    dlv_size: int | None = None
    vmta: str = ""
    job_id: str = ""
    env_id: str = ""
    queue: str = ""
    vmta_pool: str = ""
    dsn_reporting_mta: str = ""
    feedback_type: str = ""
    format: str = ""
    user_agent: str = ""
    reporting_mta: str = ""
    reported_domain: str = ""
    rep_source_ip: str = ""
    rcv_source_ip: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())

    def header(self, name: str) -> str:
        """The first value of header ``name`` (case-insensitive), or ``""``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return ""


# --- formatting helpers ----------------------------------------------------------------------


def format_time(epoch: float, tz: tzinfo = UTC) -> str:
    """``YYYY-MM-DD HH:MM:SS+ZZZZ`` for ``epoch`` seen in zone ``tz`` (PowerMTA's CSV form)."""
    return datetime.fromtimestamp(int(epoch), tz).strftime("%Y-%m-%d %H:%M:%S%z")


#: RFC 3463 §3 subject and detail descriptions, as PowerMTA appends them to dsnStatus.
_STATUS_TEXT: dict[str, str] = {
    "0.0": "undefined status",
    "1.0": "other address status",
    "1.1": "bad destination mailbox address",
    "1.2": "bad destination system address",
    "1.3": "bad destination mailbox address syntax",
    "1.4": "destination mailbox address ambiguous",
    "1.5": "destination mailbox address valid",
    "1.6": "mailbox has moved",
    "1.7": "bad sender's mailbox address syntax",
    "1.8": "bad sender's system address",
    "1.10": "recipient address has null MX",
    "2.0": "other or undefined mailbox status",
    "2.1": "mailbox disabled, not accepting messages",
    "2.2": "mailbox full",
    "2.3": "message length exceeds administrative limit",
    "2.4": "mailing list expansion problem",
    "3.0": "other or undefined mail system status",
    "3.1": "mail system full",
    "3.2": "system not accepting network messages",
    "3.3": "system not capable of selected features",
    "3.4": "message too big for system",
    "3.5": "system incorrectly configured",
    "4.0": "other or undefined network or routing status",
    "4.1": "no answer from host",
    "4.2": "bad connection",
    "4.3": "routing server failure",
    "4.4": "unable to route",
    "4.5": "network congestion",
    "4.6": "routing loop detected",
    "4.7": "delivery time expired",
    "5.0": "other or undefined protocol status",
    "5.1": "invalid command",
    "5.2": "syntax error",
    "5.3": "too many recipients",
    "5.4": "invalid command arguments",
    "5.5": "wrong protocol version",
    "6.0": "other or undefined media error",
    "6.1": "media not supported",
    "6.2": "conversion required and prohibited",
    "6.3": "conversion required but not supported",
    "6.4": "conversion with loss performed",
    "6.5": "conversion failed",
    "7.0": "other or undefined security status",
    "7.1": "delivery not authorized, message refused",
    "7.2": "mailing list expansion prohibited",
    "7.3": "security conversion required but not possible",
    "7.4": "security features not supported",
    "7.5": "cryptographic failure",
    "7.6": "cryptographic algorithm not supported",
    "7.7": "message integrity failure",
}

_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


def dsn_status_text(status: str) -> str:
    """``5.1.1`` → ``5.1.1 (bad destination mailbox address)``; ``2.0.0`` → ``... (success)``.

    Anything that is not a bare RFC 3463 code is returned unchanged.
    """
    match = _STATUS_RE.match(status)
    if not match:
        return status
    cls, subject, detail = match.groups()
    if cls == "2" and subject == "0" and detail == "0":
        return f"{status} (success)"
    text = _STATUS_TEXT.get(f"{subject}.{detail}") or _STATUS_TEXT.get(f"{subject}.0")
    return f"{status} ({text})" if text else status


def csv_field(value: str) -> str:
    """One value, quoted when it holds a comma, double quote, CR or LF (RFC 4180 §2)."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Iterable[str]) -> str:
    """A CSV line of ``values``, LF-terminated."""
    return ",".join(csv_field(v) for v in values) + "\n"


# --- the field table -------------------------------------------------------------------------

_Getter = Callable[[AcctRecord, "TimeFormatter"], str]


class TimeFormatter:
    """Formats times in one zone, remembering the last second it formatted (rows logged in
    the same second share the work)."""

    __slots__ = ("_last", "_last_text", "tz")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._last = -1
        self._last_text = ""

    def text(self, epoch: float | None) -> str:
        if epoch is None:
            return ""
        second = int(epoch)
        if second != self._last:
            self._last, self._last_text = second, format_time(second, self.tz)
        return self._last_text


def _text(attr: Callable[[AcctRecord], str]) -> _Getter:
    return lambda r, _t: attr(r)


def _total_seconds(r: AcctRecord, _t: TimeFormatter) -> str:
    return "" if r.time_queued is None else str(max(0, int(r.time_logged - r.time_queued)))


_FIELDS: dict[str, _Getter] = {
    "type": _text(lambda r: r.type.value),
    "timeLogged": lambda r, t: t.text(r.time_logged),
    "timeQueued": lambda r, t: t.text(r.time_queued),
    "timeImprinted": lambda r, t: t.text(r.time_queued),  # older versions' name
    "timeFirstAttempt": lambda r, t: t.text(r.time_first_attempt),
    "totalSecondsQueued": _total_seconds,
    "orig": _text(lambda r: r.orig),
    "rcpt": _text(lambda r: r.rcpt),
    "orcpt": _text(lambda r: r.orcpt),
    "dsnAction": _text(lambda r: r.dsn_action),
    "dsnStatus": _text(lambda r: dsn_status_text(r.dsn_status)),
    "dsnDiag": _text(lambda r: r.dsn_diag),
    "dsnMta": _text(lambda r: r.dsn_mta),
    "dsnReportingMta": _text(lambda r: r.dsn_reporting_mta),
    "bounceCat": _text(lambda r: r.bounce_cat),
    "srcType": _text(lambda r: r.src_type),
    "srcMta": _text(lambda r: r.src_mta),
    "dlvType": _text(lambda r: r.dlv_type),
    "dlvSourceIp": _text(lambda r: r.dlv_source_ip),
    "dlvDestinationIp": _text(lambda r: r.dlv_destination_ip),
    "dlvEsmtpAvailable": _text(lambda r: r.dlv_esmtp_available),
    "dlvSize": _text(lambda r: "" if r.dlv_size is None else str(r.dlv_size)),
    "vmta": _text(lambda r: r.vmta),
    "jobId": _text(lambda r: r.job_id),
    "envId": _text(lambda r: r.env_id),
    "queue": _text(lambda r: r.queue),
    "vmtaPool": _text(lambda r: r.vmta_pool),
    "feedbackType": _text(lambda r: r.feedback_type),
    "format": _text(lambda r: r.format),
    "userAgent": _text(lambda r: r.user_agent),
    "reportingMta": _text(lambda r: r.reporting_mta),
    "reportedDomain": _text(lambda r: r.reported_domain),
    "repSourceIp": _text(lambda r: r.rep_source_ip),
    "rcvSourceIp": _text(lambda r: r.rcv_source_ip),
}
_CANONICAL = {name.lower(): name for name in _FIELDS}
_HEADER_PREFIX = "header_"
_HEADER_NAME_RE = re.compile(r"^[!-9;-~]+$")  # RFC 5322 §3.6.8 field-name characters


def _getter(name: str) -> _Getter:
    if name.startswith(_HEADER_PREFIX):
        header = name[len(_HEADER_PREFIX) :]
        return lambda r, _t: r.header(header)
    return _FIELDS[name]


def _canonical_field(name: str) -> str:
    if name.lower().startswith(_HEADER_PREFIX):
        header = name[len(_HEADER_PREFIX) :]
        if not _HEADER_NAME_RE.match(header):
            raise AcctConfigError(f"bad header name in accounting field {name!r}")
        return _HEADER_PREFIX + header
    canonical = _CANONICAL.get(name.lower())
    if canonical is None:
        raise AcctConfigError(f"unknown accounting field {name!r}")
    return canonical


def parse_field_list(
    text: str | Sequence[str], default: Sequence[str] = DEFAULT_FIELDS
) -> tuple[str, ...]:
    """``*,envId,header_X-Id`` → field names; ``*`` is ``default``; ``type`` always first."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = ["type"]
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        names = default if item == "*" else (_canonical_field(item),)
        out.extend(n for n in names if n not in out)
    return tuple(out)


def parse_record_types(text: str | Iterable[str]) -> frozenset[RecordType]:
    """``d,b,tq`` or ``delivery, bounce`` → the record types; raises AcctConfigError."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: set[RecordType] = set()
    for raw in items:
        item = raw.strip().lower()
        if not item:
            continue
        out.add(_record_type(item))
    if not out:
        raise AcctConfigError("records needs at least one record type")
    return frozenset(out)


def _record_type(name: str) -> RecordType:
    try:
        return RecordType(name)
    except ValueError:
        pass
    found = _TYPE_ALIASES.get(name)
    if found is None:
        raise AcctConfigError(f"unknown accounting record type {name!r}")
    return found


# --- layouts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctLayout:
    """The columns of one accounting file and which of them each record type fills."""

    types: frozenset[RecordType]
    fields: Mapping[RecordType, tuple[str, ...]]
    columns: tuple[str, ...]
    _plans: Mapping[RecordType, tuple[_Getter | None, ...]]

    @classmethod
    def build(
        cls,
        records: str | Iterable[RecordType] = _DEFAULT_RECORDS,
        record_fields: Mapping[str | RecordType, str | Sequence[str]] | None = None,
    ) -> AcctLayout:
        """A layout for the ``records`` selection and per-type ``record-fields``."""
        types = parse_record_types(records) if isinstance(records, str) else frozenset(records)
        if not types:
            raise AcctConfigError("records needs at least one record type")
        custom: dict[RecordType, tuple[str, ...]] = {}
        for key, value in (record_fields or {}).items():
            kind = key if isinstance(key, RecordType) else _record_type(key.strip().lower())
            default = FEEDBACK_FIELDS if kind is RecordType.FEEDBACK else DEFAULT_FIELDS
            custom[kind] = parse_field_list(value, default)
        fields: dict[RecordType, tuple[str, ...]] = {}
        columns: list[str] = []
        for kind in _TYPE_ORDER:
            if kind not in types:
                continue
            default = FEEDBACK_FIELDS if kind is RecordType.FEEDBACK else DEFAULT_FIELDS
            fields[kind] = custom.get(kind, default)
            columns.extend(name for name in fields[kind] if name not in columns)
        plans = {
            kind: tuple(_getter(c) if c in names else None for c in columns)
            for kind, names in fields.items()
        }
        return cls(types=types, fields=fields, columns=tuple(columns), _plans=plans)

    def wants(self, kind: RecordType) -> bool:
        """True if records of ``kind`` go to this file."""
        return kind in self.types

    def header(self) -> str:
        """The header line (LF-terminated)."""
        return csv_line(self.columns)

    def row(
        self, record: AcctRecord, tz: tzinfo = UTC, *, times: TimeFormatter | None = None
    ) -> str:
        """The CSV line for ``record`` (LF-terminated); raises KeyError if not ``wants``.

        ``times`` (a ``TimeFormatter`` for ``tz``) lets a writer reuse formatted seconds.
        """
        times = times if times is not None else TimeFormatter(tz)
        return csv_line("" if g is None else g(record, times) for g in self._plans[record.type])


#: The layout of a file with no ``records``/``record-fields`` lines: d and b, default columns.
DEFAULT_LAYOUT = AcctLayout.build()


def format_row(record: AcctRecord, fields: Sequence[str] = DEFAULT_FIELDS, tz: tzinfo = UTC) -> str:
    """One CSV line of ``fields`` for ``record`` (a layout of just this record's type)."""
    layout = AcctLayout.build([record.type], {record.type: fields})
    return layout.row(record, tz)
