"""RFC 5321 §4.1.2 grammar as compiled regexes: paths, mailboxes, domains, address literals,
ESMTP parameters, xtext (RFC 3461 §4), EHLO keywords; RFC 6531 UTF-8 where SMTPUTF8 allows.

Shared by both roles: the server parses with it, the client checks what it sends with it, so
the two cannot disagree about what a valid path is. Every pattern is linear: no nested
quantifiers that could backtrack (possessive or single-character alternatives only).

Public names: PathProblem, GrammarError, Path, parse_path, path_parts, split_path_and_params,
PLAIN_PATH and plain_path_address (the server's fast path for the usual path), parse_params,
is_domain, is_address_literal, xtext_decode, xtext_encode, parse_ehlo_extensions.
Raises: GrammarError (with a PathProblem) from the parsers.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.smtp.limits import MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH

__all__ = [
    "PLAIN_PATH",
    "GrammarError",
    "Path",
    "PathProblem",
    "is_address_literal",
    "is_domain",
    "parse_ehlo_extensions",
    "parse_params",
    "parse_path",
    "path_parts",
    "plain_path_address",
    "split_path_and_params",
    "xtext_decode",
    "xtext_encode",
]


class PathProblem(enum.Enum):
    """Why a path or parameter list did not parse."""

    #: Not RFC 5321 (or RFC 6531) syntax.
    SYNTAX = "syntax"
    #: Longer than 256 octets (RFC 5321 §4.5.3.1.3).
    PATH_TOO_LONG = "path-too-long"
    #: Local part over 64 octets or domain over 255 (RFC 5321 §4.5.3.1.1-2).
    NAME_TOO_LONG = "name-too-long"
    #: Non-ASCII where SMTPUTF8 was not given (RFC 6531 §3.5).
    NON_ASCII = "non-ascii"


class GrammarError(ValueError):
    """A path or parameter did not parse; ``problem`` says why."""

    def __init__(self, problem: PathProblem, detail: str = "") -> None:
        super().__init__(detail or problem.value)
        self.problem = problem


# RFC 5321 §4.1.2 + RFC 6531 §3.3 (UTF8-non-ascii added to atext, qtext and sub-domains).
_U = "\u0080-\U0010ffff"
_ATEXT = rf"A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_U}"
_DOT_STRING = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e])*+"'
_LOCAL = rf"(?:{_DOT_STRING}|{_QUOTED})"
# Hyphen placement inside labels is checked in code (keeps the pattern linear).
_DOMAIN = rf"[A-Za-z0-9{_U}-]+(?:\.[A-Za-z0-9{_U}-]+)*"
_LITERAL = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_DOMAIN_RE = re.compile(_DOMAIN)
_MAILBOX_RE = re.compile(rf"(?P<local>{_LOCAL})@(?P<domain>{_DOMAIN}|{_LITERAL})")
_ROUTE_RE = re.compile(rf"@{_DOMAIN}(?:,@{_DOMAIN})*")
# The path token: "<" ... ">" where ">" inside a quoted local part does not count.
_PATH_TOKEN_RE = re.compile(r'<(?:[^<>"\s\\]|"(?:[^"\\\r\n]|\\.)*+")*+>')
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_PARAM_RE = re.compile(
    rf"(?P<key>[A-Za-z0-9][A-Za-z0-9-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e{_U}]+))?"
)
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_XTEXT_HEX_RE = re.compile(r"\+([0-9A-F]{2})")
_XTEXT_UNSAFE_RE = re.compile(r"[^\x21-\x2a\x2c-\x3c\x3e-\x7e]")
_PLAIN_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
#: The usual path after ``FROM:``/``TO:`` (one optional space): ``<local@domain>``, a plain
#: ASCII dot-atom local part and LDH labels, nothing after it. Group 1: the address, group 2:
#: the domain. Compile it with the keyword in front and ``re.ASCII``; a match still needs
#: :func:`plain_path_address` (the limits); anything else takes the full parser.
PLAIN_PATH = (
    rf" ?<([{_PLAIN_ATEXT}]++(?:\.[{_PLAIN_ATEXT}]++)*+@"
    r"([A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)*+))>"
)
_IPV4_RE = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_GENERAL_LITERAL_RE = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path: the mailbox (``""`` for ``<>``) and the ignored source route."""

    address: str
    route: tuple[str, ...] = ()


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def is_domain(text: str) -> bool:
    """An RFC 5321 Domain (ASCII or U-labels): dot-separated labels of letters, digits and
    inner hyphens, at most 255 octets."""
    if _DOMAIN_RE.fullmatch(text) is None or _octets(text) > MAX_DOMAIN:
        return False
    return not (text[0] == "-" or text[-1] == "-" or "-." in text or ".-" in text)


def is_address_literal(text: str) -> bool:
    """``[IPv4]``, ``[IPv6:addr]`` or a general ``[tag:content]`` literal (RFC 5321 §4.1.3)."""
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        return False
    inner = text[1:-1]
    m = _IPV4_RE.fullmatch(inner)
    if m is not None:
        return all(int(part) <= 255 for part in m.groups())
    if inner[:5].upper() == "IPV6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    return _GENERAL_LITERAL_RE.fullmatch(inner) is not None


def parse_path(token: str, *, utf8: bool, postmaster: bool = False) -> Path:
    """Parse ``<...>`` (brackets included): ``<>``, ``<[@route,...:]mailbox>``, or with
    ``postmaster`` also ``<Postmaster>`` (RFC 5321 §4.1.1.3). Raises GrammarError."""
    address, route = path_parts(token, utf8=utf8, postmaster=postmaster)
    return Path(address=address, route=route)


def path_parts(token: str, *, utf8: bool, postmaster: bool = False) -> tuple[str, tuple[str, ...]]:
    """:func:`parse_path` as a plain ``(address, route)`` pair (the server's hot path)."""
    if (len(token) if token.isascii() else len(token.encode("utf-8"))) > MAX_PATH:
        raise GrammarError(PathProblem.PATH_TOO_LONG)
    if len(token) < 2 or token[0] != "<" or token[-1] != ">":
        raise GrammarError(PathProblem.SYNTAX, "path must be in angle brackets")
    inner = token[1:-1]
    if not inner:
        return "", ()
    if not utf8 and not inner.isascii():
        raise GrammarError(PathProblem.NON_ASCII)
    if postmaster and inner.lower() == "postmaster":
        return inner, ()
    route: tuple[str, ...] = ()
    if inner[0] == "@":
        colon = inner.find(":")
        if colon < 0 or _ROUTE_RE.fullmatch(inner, 0, colon) is None:
            raise GrammarError(PathProblem.SYNTAX, "bad source route")
        route = tuple(part[1:] for part in inner[:colon].split(","))
        if not all(is_domain(d) for d in route):
            raise GrammarError(PathProblem.SYNTAX, "bad domain in source route")
        inner = inner[colon + 1 :]
    m = _MAILBOX_RE.fullmatch(inner)
    if m is None:
        raise GrammarError(PathProblem.SYNTAX)
    local, domain = m.group("local", "domain")
    if _octets(local) > MAX_LOCAL_PART or _octets(domain) > MAX_DOMAIN:
        raise GrammarError(PathProblem.NAME_TOO_LONG)
    if domain[0] == "[":
        if not is_address_literal(domain):
            raise GrammarError(PathProblem.SYNTAX, "bad address literal")
    elif domain[0] == "-" or domain[-1] == "-" or "-." in domain or ".-" in domain:
        raise GrammarError(PathProblem.SYNTAX, "bad domain")
    return inner, route


def plain_path_address(m: re.Match[str]) -> str | None:
    """The address of a :data:`PLAIN_PATH` match when it is within every RFC 5321 limit and
    its domain's hyphens are in place (what :func:`path_parts` would return for it), else
    None: let the full parser find the problem."""
    address, domain = m.group(1, 2)
    if (
        len(address) + 2 > MAX_PATH
        or len(domain) > MAX_DOMAIN
        or len(address) - len(domain) - 1 > MAX_LOCAL_PART
        or domain[0] == "-"
        or domain[-1] == "-"
        or "-." in domain
        or ".-" in domain
    ):
        return None
    return address


def split_path_and_params(argument: str) -> tuple[str, str]:
    """Split what follows ``FROM:``/``TO:`` into the path token and the parameter string.

    One optional space after the colon is tolerated (many clients send it). Raises
    GrammarError(SYNTAX) when there is no path token.
    """
    start = 1 if argument[:1] == " " else 0
    m = _PATH_TOKEN_RE.match(argument, start)
    if m is None:
        # A long unterminated path is still "too long" rather than "syntax".
        if _octets(argument) > MAX_PATH and argument[start : start + 1] == "<":
            raise GrammarError(PathProblem.PATH_TOO_LONG)
        raise GrammarError(PathProblem.SYNTAX, "no <path>")
    rest = argument[m.end() :]
    if rest and rest[0] != " ":
        raise GrammarError(PathProblem.SYNTAX, "junk after path")
    return m[0], rest.strip(" ")


def parse_params(text: str) -> list[tuple[str, str | None]]:
    """``KEY[=VALUE] ...`` (RFC 5321 §4.1.2 esmtp-param) → [(KEY upper-cased, value)].
    Raises GrammarError(SYNTAX)."""
    out: list[tuple[str, str | None]] = []
    if not text:
        return out
    for item in text.split(" "):
        if not item:
            continue
        m = _PARAM_RE.fullmatch(item)
        if m is None:
            raise GrammarError(PathProblem.SYNTAX, f"bad parameter {item[:40]!r}")
        out.append((m["key"].upper(), m["value"]))
    return out


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 §4 xtext (``+XX`` hex escapes) to a UTF-8 string. Raises GrammarError."""
    if _XTEXT_RE.fullmatch(text) is None:
        raise GrammarError(PathProblem.SYNTAX, "bad xtext")
    if "+" not in text:
        return text
    raw = _XTEXT_HEX_RE.sub(lambda m: chr(int(m[1], 16)), text).encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GrammarError(PathProblem.SYNTAX, "xtext is not UTF-8") from exc


def xtext_encode(text: str) -> str:
    """Encode a string as RFC 3461 xtext (UTF-8 octets outside ``!``..``~``, ``+``, ``=``)."""
    if _XTEXT_UNSAFE_RE.search(text) is None:
        return text
    return "".join(
        ch
        if _XTEXT_UNSAFE_RE.match(ch) is None
        else "".join(f"+{b:02X}" for b in ch.encode("utf-8"))
        for ch in text
    )


def parse_ehlo_extensions(lines: Sequence[str]) -> dict[str, str]:
    """EHLO reply lines after the first → {KEYWORD: parameters} (RFC 5321 §4.1.1.1)."""
    out: dict[str, str] = {}
    for line in lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if _KEYWORD_RE.fullmatch(keyword) is not None:
            out[keyword.upper()] = params.strip()
    return out
