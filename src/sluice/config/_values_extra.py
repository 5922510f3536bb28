"""Value kinds of Sluice's own directives: calendar dates and percentages with decimals.

``date`` is an ISO calendar date ``YYYY-MM-DD`` (a :class:`datetime.date`); ``percent-decimal``
is ``0``–``100`` with at most three decimals and an optional ``%`` (a ``float`` in percent,
``2.5%`` → 2.5).

Public names: parse_date, format_date, parse_percent_decimal, format_percent_decimal. The
parsers raise :class:`~sluice.config._values_base.ValueFormError` naming the expected form.
"""

from __future__ import annotations

import datetime as _dt
import re

from sluice.config._values_base import ValueFormError, fail

__all__ = ["format_date", "format_percent_decimal", "parse_date", "parse_percent_decimal"]

_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATE_FORM = "a date YYYY-MM-DD such as 2026-12-01"
#: Decimals accepted in a percentage: a thousandth of a percent is finer than any sample
#: a warm-up day holds, and keeps the canonical text (``%g``, 6 digits) exact.
_PERCENT_RE = re.compile(r"([0-9]{1,3})(\.[0-9]{1,3})?%?")
_PERCENT_FORM = "a percentage 0-100 such as 10% or 2.5%"


def parse_date(text: str) -> _dt.date:
    """``2026-12-01`` → ``date(2026, 12, 1)``."""
    t = text.strip()
    match = _DATE_RE.fullmatch(t)
    if match is None:
        raise fail(_DATE_FORM, text)
    try:
        return _dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise ValueFormError(f"expected {_DATE_FORM}, got {text!r} ({exc})") from None


def format_date(value: object) -> str:
    assert isinstance(value, _dt.date)
    return value.isoformat()


def parse_percent_decimal(text: str) -> float:
    """``10%``, ``2.5%``, ``0.25`` → the percentage as a float (2.5 for ``2.5%``)."""
    t = text.strip()
    if _PERCENT_RE.fullmatch(t) is None:
        raise fail(_PERCENT_FORM, text)
    value = float(t.removesuffix("%"))
    if value > 100:
        raise fail(_PERCENT_FORM, text)
    return value


def format_percent_decimal(value: object) -> str:
    assert isinstance(value, float)
    return f"{value:g}%"
