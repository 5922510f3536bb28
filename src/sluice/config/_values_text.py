"""Value kinds that are text: strings, words, names, e-mail addresses, paths, regular
expressions and header field names.

Public names: parse_string, parse_word, parse_name, parse_email, parse_path, parse_regex,
format_regex, parse_header_name. The parsers raise
:class:`~sluice.config._values_base.ValueFormError` naming the expected form.
"""

from __future__ import annotations

import re
import warnings

from sluice.config._values_base import ValueFormError, fail

__all__ = [
    "format_regex",
    "parse_email",
    "parse_header_name",
    "parse_name",
    "parse_path",
    "parse_regex",
    "parse_string",
    "parse_word",
]


def parse_string(text: str) -> str:
    if not text:
        raise fail("a value", text)
    return text


def parse_word(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise fail("a single word", text)
    return text


_NAME_RE = re.compile(r"[A-Za-z0-9_.{}-]+|\{[^\s{}]+\}")


def parse_name(text: str) -> str:
    if not _NAME_RE.fullmatch(text):
        raise fail("a name (letters, digits, '.', '-', '_', {})", text)
    return text


_EMAIL_RE = re.compile(r"[^\s@,]+@[^\s@,]+")


def parse_email(text: str) -> str:
    if not _EMAIL_RE.fullmatch(text.strip()):
        raise fail("an e-mail address such as postmaster@example.com", text)
    return text.strip()


def parse_path(text: str) -> str:
    if not text.strip():
        raise fail("a file path", text)
    return text.strip()


def parse_regex(text: str) -> re.Pattern[str]:
    """``/regex/`` (or bare text) → a compiled, case-sensitive pattern."""
    t = text.strip()
    if len(t) >= 2 and t.startswith("/") and t.endswith("/"):
        t = t[1:-1]
    try:
        with warnings.catch_warnings():
            # "Possible nested set" and the like: today's meaning is the one that applies.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(t)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueFormError(f"regular expression does not compile: {exc}") from None


def format_regex(value: object) -> str:
    assert isinstance(value, re.Pattern)
    return f"/{value.pattern}/"


_HEADER_RE = re.compile(r"[!-9;-~]+")  # RFC 5322 §3.6.8 ftext: printable except ':'


def parse_header_name(text: str) -> str:
    if not _HEADER_RE.fullmatch(text.strip()):
        raise fail("a header field name such as X-Job", text)
    return text.strip()
