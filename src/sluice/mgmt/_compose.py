"""HTTP injection requests (parsed JSON) → validated envelope fields and RFC 5322 bytes.

Pure: no I/O; ``now`` and the new Message-ID are passed in. Two request forms
(docs/http-api.md): *structured* (``from``, ``to``, ``subject``, ``headers``, ``text``),
from which a message is built, and *raw* (``mail_from``, ``rcpt_to``, ``content``), whose
content is taken as the message after its line endings are made CRLF. Both take the optional
``virtual_mta``, ``job_id`` and ``env_id``.

Nothing the client sends can add a header line or an SMTP command: every string that ends
up in a header is refused when it holds CR, LF, NUL or another control character, header
names must be RFC 5322 ftext, and values are limited to 998 octets (RFC 5322 §2.1.1).

Public names: InjectRequest, parse_inject, routing_headers, MAX_HEADER_VALUE,
MAX_HEADER_BLOCK, MAX_LINE. Raises :class:`~sluice.mgmt.ApiError` (400) naming the field.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header

from sluice.mgmt._errors import ApiError
from sluice.smtp._grammar import GrammarError, parse_path
from sluice.smtp.limits import MAX_ENVID

__all__ = [
    "MAX_HEADER_BLOCK",
    "MAX_HEADER_VALUE",
    "MAX_LINE",
    "InjectRequest",
    "parse_inject",
    "routing_headers",
]

#: RFC 5322 §2.1.1: a line is at most 998 characters without its CRLF; a header value may
#: not be longer either (folding aside, a longer value could not be written safely).
MAX_HEADER_VALUE = 998
#: RFC 5322 §2.1.1 / RFC 5321 §4.5.3.1.6: longest line of content, CRLF not counted.
MAX_LINE = 998
#: Postfix's ``header_size_limit`` (102,400 octets): the largest header block we build.
MAX_HEADER_BLOCK = 102_400
#: RFC 5322 §2.1.1 recommends 78-character lines; a field name longer than this would not
#: leave room for its value on such a line.
MAX_HEADER_NAME = 76
#: Job ids go into X-Job and into every accounting record; PowerMTA documents no limit.
MAX_JOB_ID = 255
#: VMTA and pool names are config words; this only bounds what is echoed back.
MAX_VMTA_NAME = 255

_STRUCTURED_KEYS = frozenset(
    {"from", "from_name", "to", "subject", "headers", "text", "virtual_mta", "job_id", "env_id"}
)
_RAW_KEYS = frozenset({"mail_from", "rcpt_to", "content", "virtual_mta", "job_id", "env_id"})

#: Fields Sluice writes itself in the structured form; ``headers`` may not name them.
_RESERVED = frozenset(
    {"from", "subject", "mime-version", "content-type", "content-transfer-encoding"}
)
#: RFC 5322 §2.2: ftext is printable US-ASCII except ":".
_FTEXT = re.compile(r"[!-9;-~]+")
#: Control characters refused in header text (HTAB is allowed: it is whitespace).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VISIBLE = re.compile(r"[!-~]+")
_PRINTABLE = re.compile(r"[ -~]+")
_CONTROL_NAMES = {"\r": "carriage return (CR)", "\n": "line feed (LF)", "\x00": "NUL"}


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectRequest:
    """A validated injection: envelope, routing parameters and message bytes (CRLF)."""

    sender: str
    recipients: tuple[str, ...]
    #: The message as Sluice will store it (before intake's header edits), CRLF lines.
    content: bytes
    vmta: str | None = None
    job_id: str | None = None
    env_id: str | None = None
    #: Some address is not ASCII (RFC 6531).
    smtputf8: bool = False
    #: The content has octets over 127 (RFC 6152).
    body_8bit: bool = False
    #: A content line is longer than 998 octets (raw form, accepted by policy).
    long_lines: bool = False
    #: The Message-ID written by the structured form (None: the client's or none).
    message_id: str | None = None


def _fail(field: str, error: str) -> ApiError:
    return ApiError(400, error, field=field)


def _safe(text: str, limit: int = 80) -> str:
    """A client-supplied name made printable, for use in an error's ``field``."""
    return "".join(ch if " " <= ch < "\x7f" else "?" for ch in text[:limit])


def _string(doc: Mapping[str, object], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise _fail(key, "missing")
        return None
    if not isinstance(value, str):
        raise _fail(key, "must be a string")
    return value


def _encode(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON "\ud800" escapes
        raise _fail(field, "is not valid Unicode") from None


def _no_controls(text: str, field: str) -> None:
    m = _CONTROL.search(text)
    if m is not None:
        ch = m.group()
        name = _CONTROL_NAMES.get(ch, f"control character U+{ord(ch):04X}")
        raise _fail(field, f"{name} not allowed")


def _header_text(text: str, field: str, limit: int = MAX_HEADER_VALUE) -> str:
    """Text that goes into a header: no control characters, at most ``limit`` octets."""
    _no_controls(text, field)
    if len(_encode(text, field)) > limit:
        raise _fail(field, f"longer than {limit} octets")
    return text


def _address(value: object, field: str, *, allow_null: bool = False) -> str:
    """An RFC 5321 mailbox (no angle brackets, no source route)."""
    if not isinstance(value, str):
        raise _fail(field, "must be a string")
    _no_controls(value, field)
    if value == "" and allow_null:
        return ""
    try:
        path = parse_path(f"<{value}>", utf8=True)
    except GrammarError as exc:
        raise _fail(field, f"not a valid RFC 5321 address ({exc.problem.value})") from None
    if not path.address:
        raise _fail(field, "must not be empty")
    if path.route:
        raise _fail(field, "source routes are not accepted")
    return path.address


def _recipients(doc: Mapping[str, object], key: str, max_recipients: int) -> tuple[str, ...]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise _fail(key, "must be a list of addresses")
    if not value:
        raise _fail(key, "needs at least one recipient")
    if len(value) > max_recipients:
        raise _fail(key, f"more than {max_recipients} recipients (max-rcpt-per-message)")
    return tuple(_address(item, f"{key}[{i}]") for i, item in enumerate(value))


def _routing(doc: Mapping[str, object]) -> tuple[str | None, str | None, str | None]:
    """``virtual_mta``, ``job_id`` and ``env_id``, each validated, or None."""
    vmta = _string(doc, "virtual_mta", required=False)
    if vmta is not None and (_VISIBLE.fullmatch(vmta) is None or len(vmta) > MAX_VMTA_NAME):
        raise _fail("virtual_mta", "must be a virtual MTA or pool name")
    job = _string(doc, "job_id", required=False)
    if job is not None:
        if _PRINTABLE.fullmatch(job) is None or job != job.strip():
            _no_controls(job, "job_id")
            raise _fail("job_id", "must be printable ASCII without surrounding spaces")
        if len(job) > MAX_JOB_ID:
            raise _fail("job_id", f"longer than {MAX_JOB_ID} characters")
    env = _string(doc, "env_id", required=False)
    if env is not None:
        if _VISIBLE.fullmatch(env) is None:
            _no_controls(env, "env_id")
            raise _fail("env_id", "must be printable ASCII without spaces (RFC 3461 §4.4)")
        if len(env) > MAX_ENVID:
            raise _fail("env_id", f"longer than {MAX_ENVID} characters (RFC 3461 §4.4)")
    return (vmta.lower() if vmta else None), job or None, env or None


def routing_headers(*, vmta: str | None, job_id: str | None, job_header: str) -> bytes:
    """The X-Virtual-MTA and job header lines that carry the ``virtual_mta`` and ``job_id``
    parameters into intake's header processing (values already validated)."""
    out = []
    if vmta is not None:
        out.append(f"X-Virtual-MTA: {vmta}\r\n")
    if job_id is not None:
        out.append(f"{job_header}: {job_id}\r\n")
    return "".join(out).encode("ascii")


# --- header writing -----------------------------------------------------------------------


def _fold_ascii(name: str, value: str, field: str) -> str:
    """``Name: value`` folded at spaces so no line exceeds 998 characters (RFC 5322 §2.2.3)."""
    line = f"{name}: {value}"
    if len(line) <= MAX_LINE:
        return line
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}: {words[0]}"
    for word in words[1:]:
        if word and len(current) + 1 + len(word) > MAX_LINE:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    if any(len(x) > MAX_LINE for x in lines):
        raise _fail(field, f"cannot be folded into lines of {MAX_LINE} characters")
    return "\r\n".join(lines)


def _unstructured(name: str, value: str, field: str) -> str:
    """One unstructured field (Subject, custom headers): ASCII as is (folded if needed),
    anything else as RFC 2047 encoded-words."""
    if value.isascii():
        return _fold_ascii(name, value, field)
    encoded: str = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}"


def _from_field(address: str, display: str | None) -> str:
    if not display:
        return f"From: {address}"
    if display.isascii():
        quoted = display.replace("\\", "\\\\").replace('"', '\\"')
        phrase = f'"{quoted}"'
    else:
        phrase = str(Header(display, "utf-8", header_name="From").encode(linesep="\r\n"))
    return _fold_ascii("From", f"{phrase} <{address}>", "from_name")


def _address_list(name: str, addresses: tuple[str, ...]) -> str:
    """``To: a, b, ...`` folded after commas; UTF-8 addresses as they are (RFC 6532)."""
    lines: list[str] = []
    current = f"{name}:"
    for i, addr in enumerate(addresses):
        word = addr + ("," if i < len(addresses) - 1 else "")
        if len(current) + 1 + len(word) > MAX_LINE:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


def _custom_headers(value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _fail("headers", "must be an object of header name to value")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, text in value.items():
        field = f"headers.{_safe(name)}"
        _no_controls(name, field)
        if len(name) > MAX_HEADER_NAME or _FTEXT.fullmatch(name) is None:
            raise _fail(field, "not a valid header name (RFC 5322 §2.2 ftext)")
        lower = name.lower()
        if lower in _RESERVED:
            raise _fail(field, "written by Sluice; use the request's own field")
        if lower in seen:
            raise _fail(field, "given twice")
        seen.add(lower)
        if not isinstance(text, str):
            raise _fail(field, "must be a string")
        out.append((name, _header_text(text, field)))
    return out


def _text_body(text: str) -> tuple[bytes, str]:
    """The body as CRLF lines and its Content-Transfer-Encoding (7bit when plain ASCII with
    short lines, quoted-printable otherwise, so no receiver needs 8BITMIME)."""
    if "\x00" in text:
        raise _fail("text", "NUL not allowed")
    text = text.replace("\r\n", "\n")
    if "\r" in text:
        raise _fail("text", "carriage return (CR) outside CRLF not allowed")
    data = _encode(text, "text")
    if data.isascii() and all(len(line) <= MAX_LINE for line in data.split(b"\n")):
        encoding = "7bit"
    else:
        data = binascii.b2a_qp(data, istext=True)
        encoding = "quoted-printable"
    body = data.replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body, encoding


def _structured(
    doc: Mapping[str, object], *, max_recipients: int, date: str, message_id: str
) -> InjectRequest:
    sender = _address(doc.get("from"), "from")
    recipients = _recipients(doc, "to", max_recipients)
    subject = _header_text(_string(doc, "subject") or "", "subject")
    display = _string(doc, "from_name", required=False)
    if display is not None:
        _header_text(display, "from_name")
    custom = _custom_headers(doc.get("headers"))
    text = _string(doc, "text") or ""
    vmta, job_id, env_id = _routing(doc)
    body, encoding = _text_body(text)

    given = {name.lower() for name, _ in custom}
    lines = [_from_field(sender, display)]
    if "to" not in given:
        lines.append(_address_list("To", recipients))
    lines.append(_unstructured("Subject", subject, "subject"))
    if "date" not in given:
        lines.append(f"Date: {date}")
    written_id = None
    if "message-id" not in given:
        written_id = message_id
        lines.append(f"Message-ID: {message_id}")
    lines += [_unstructured(name, value, f"headers.{_safe(name)}") for name, value in custom]
    lines += [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {encoding}",
    ]
    header = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    if len(header) > MAX_HEADER_BLOCK:
        raise _fail("headers", f"header block longer than {MAX_HEADER_BLOCK} octets")
    everything = (sender, *recipients)
    return InjectRequest(
        sender=sender,
        recipients=recipients,
        content=header + body,
        vmta=vmta,
        job_id=job_id,
        env_id=env_id,
        smtputf8=not all(a.isascii() for a in everything),
        body_8bit=not header.isascii(),
        message_id=written_id,
    )


def _raw(doc: Mapping[str, object], *, max_recipients: int, long_lines_ok: bool) -> InjectRequest:
    sender = _address(doc.get("mail_from"), "mail_from", allow_null=True)
    recipients = _recipients(doc, "rcpt_to", max_recipients)
    content = _string(doc, "content") or ""
    vmta, job_id, env_id = _routing(doc)
    if not content:
        raise _fail("content", "must not be empty")
    if "\x00" in content:
        raise _fail("content", "NUL not allowed")
    content = content.replace("\r\n", "\n")
    if "\r" in content:
        raise _fail("content", "carriage return (CR) outside CRLF not allowed")
    data = _encode(content, "content")
    long_lines = any(len(line) > MAX_LINE for line in data.split(b"\n"))
    if long_lines and not long_lines_ok:
        raise _fail("content", f"a line is longer than {MAX_LINE} octets (RFC 5322 §2.1.1)")
    data = data.replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return InjectRequest(
        sender=sender,
        recipients=recipients,
        content=data,
        vmta=vmta,
        job_id=job_id,
        env_id=env_id,
        smtputf8=not all(a.isascii() for a in (sender, *recipients)),
        body_8bit=not data.isascii(),
        long_lines=long_lines,
    )


def parse_inject(
    doc: Mapping[str, object],
    *,
    max_recipients: int,
    long_lines_ok: bool,
    date: str,
    message_id: str,
) -> InjectRequest:
    """Validate one request body (a parsed JSON object) and build the message.

    ``max_recipients`` is the source's ``max-rcpt-per-message``; ``long_lines_ok`` whether
    its policy accepts raw lines over 998 octets; ``date`` (RFC 5322 §3.3) and
    ``message_id`` (``<id@host>``) are written by the structured form unless ``headers``
    gives its own. Raises ApiError(400) naming the first field at fault.
    """
    keys = set(doc)
    raw = "content" in keys or "mail_from" in keys or "rcpt_to" in keys
    allowed = _RAW_KEYS if raw else _STRUCTURED_KEYS
    for key in sorted(keys - allowed):
        other = key in (_STRUCTURED_KEYS if raw else _RAW_KEYS)
        reason = "belongs to the other request form" if other else "unknown field"
        raise _fail(_safe(key), reason)
    if raw:
        return _raw(doc, max_recipients=max_recipients, long_lines_ok=long_lines_ok)
    return _structured(doc, max_recipients=max_recipients, date=date, message_id=message_id)
