"""Shared pieces of the value parsers: the error type and small number/word helpers.

Public names: ValueFormError, MAX_INT, fail, parse_uint, exact_words. ``parse_uint`` and
``exact_words`` raise :class:`ValueFormError` naming the expected form.
"""

from __future__ import annotations

import re

__all__ = ["MAX_INT", "ValueFormError", "exact_words", "fail", "parse_uint"]

#: Upper bound on any parsed integer: far above every real limit, small enough to stay exact
#: in JSON consumers that use doubles (2**53).
MAX_INT = 2**53


class ValueFormError(ValueError):
    """A value does not have the form its directive expects; the message names that form."""


def fail(expected: str, text: str) -> ValueFormError:
    return ValueFormError(f"expected {expected}, got {text!r}")


def parse_uint(text: str, expected: str) -> int:
    if not re.fullmatch(r"[0-9]+", text):
        raise fail(expected, text)
    value = int(text)
    if value > MAX_INT:
        raise ValueFormError(f"{text} is too large")
    return value


def exact_words(text: str, count: int, expected: str) -> list[str]:
    words = text.split()
    if len(words) != count:
        raise fail(expected, text)
    return words
