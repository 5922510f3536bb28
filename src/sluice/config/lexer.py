"""Line-oriented lexer of the PowerMTA config language: text → directive and tag tokens.

Rules: ``#`` starts a comment anywhere outside double quotes (so a value cannot contain
``#``); blank lines are ignored; a directive is ``name value…`` up to the end of the line or
up to a tag that starts a new word (``</tag>`` or ``<block-tag …>``), so several blocks and
directives may share one line (``<virtual-mta ip11> smtp-source-host … </virtual-mta>``);
``"…"`` groups words and ``""`` is an empty value (it clears an inherited one); the seed's
``<name>value</name>`` form becomes a directive token marked ``xml_form``. There is no line
continuation.

Public names: TokenKind, Token, BLOCK_TAGS, lex. :func:`lex` never raises: problems come back
as :class:`~sluice.config.errors.Diagnostic` values next to the tokens.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sluice.config.errors import Diagnostic

__all__ = ["BLOCK_TAGS", "Token", "TokenKind", "lex"]

#: Tags that open a block (reference §1.3; ``warmup-plan`` is a Sluice extension).
BLOCK_TAGS: frozenset[str] = frozenset(
    {
        "domain",
        "virtual-mta",
        "virtual-mta-pool",
        "source",
        "smtp-user",
        "smtp-pattern-list",
        "pattern-list",
        "bounce-category-patterns",
        "acct-file",
        "spool",
        "rewrite-list",
        "bounce-processor",
        "feedback-loop-processor",
        "address-list",
        "signals",
        "smtp-listener",
        "warmup-plan",
    }
)


class TokenKind(enum.Enum):
    """What a token is."""

    #: ``name value…`` (also ``<name>value</name>``).
    DIRECTIVE = "directive"
    #: ``<tag args…>``.
    OPEN = "open"
    #: ``</tag>``.
    CLOSE = "close"


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """One directive or tag, with where it came from.

    ``name`` is the directive name or the tag; ``args`` the value words with quotes removed;
    ``rest`` the raw value text after the name; ``text`` the raw text of the whole directive
    (for pattern lines, where regular expressions may hold spaces); ``quoted`` is True when the
    value is exactly one quoted string.
    """

    kind: TokenKind
    file: str
    line: int
    name: str
    args: tuple[str, ...] = ()
    rest: str = ""
    text: str = ""
    quoted: bool = False
    xml_form: bool = False


_CLOSE_RE = re.compile(r"</\s*([A-Za-z][\w.-]*)\s*>")
_OPEN_RE = re.compile(r"<([A-Za-z][\w.-]*)((?:\s[^<>]*)?)>")
_XML_RE = re.compile(r"<([A-Za-z][\w.-]*)>([^<>]*)</\1>")
_TAG_START_RE = re.compile(r"</|<([A-Za-z][\w.-]*)(?=[\s>])")


def _strip_comment(line: str) -> tuple[str, bool]:
    """The line without its comment, and whether a quote was left open."""
    in_quote = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_quote = not in_quote
        elif ch == "#" and not in_quote:
            return line[:i], False
    return line, in_quote


def split_words(text: str) -> tuple[tuple[str, ...], bool]:
    """Whitespace-separated words, double quotes grouping; also whether it was one quoted word."""
    words: list[str] = []
    quoted_words = 0
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        word: list[str] = []
        was_quoted = False
        while i < n and not text[i].isspace():
            if text[i] == '"':
                end = text.find('"', i + 1)
                end = n if end < 0 else end
                word.append(text[i + 1 : end])
                was_quoted = True
                i = end + 1
            else:
                word.append(text[i])
                i += 1
        words.append("".join(word))
        quoted_words += was_quoted
    return tuple(words), (len(words) == 1 and quoted_words == 1)


def _directive_end(line: str, start: int) -> int:
    """Where a directive starting at ``start`` ends: end of line or a tag starting a word."""
    in_quote = False
    i = start
    while i < len(line):
        ch = line[i]
        if ch == '"':
            in_quote = not in_quote
        elif ch == "<" and not in_quote and i > start and line[i - 1].isspace():
            m = _TAG_START_RE.match(line, i)
            if m is not None and (m.group(1) is None or m.group(1).lower() in BLOCK_TAGS):
                return i
        i += 1
    return len(line)


def _lex_line(line: str, file: str, lineno: int, out: list[Token], diags: list[Diagnostic]) -> None:
    pos = 0
    n = len(line)
    while pos < n:
        if line[pos].isspace():
            pos += 1
            continue
        if line[pos] == "<":
            if m := _CLOSE_RE.match(line, pos):
                out.append(
                    Token(kind=TokenKind.CLOSE, file=file, line=lineno, name=m.group(1).lower())
                )
                pos = m.end()
                continue
            if (m := _XML_RE.match(line, pos)) and m.group(1).lower() not in BLOCK_TAGS:
                value = m.group(2).strip()
                args, quoted = split_words(value)
                out.append(
                    Token(
                        kind=TokenKind.DIRECTIVE,
                        file=file,
                        line=lineno,
                        name=m.group(1).lower(),
                        args=args,
                        rest=value,
                        text=m.group(0),
                        quoted=quoted,
                        xml_form=True,
                    )
                )
                pos = m.end()
                continue
            if m := _OPEN_RE.match(line, pos):
                rest = m.group(2).strip()
                args, quoted = split_words(rest)
                out.append(
                    Token(
                        kind=TokenKind.OPEN,
                        file=file,
                        line=lineno,
                        name=m.group(1).lower(),
                        args=args,
                        rest=rest,
                        text=m.group(0),
                        quoted=quoted,
                    )
                )
                pos = m.end()
                continue
            diags.append(
                Diagnostic(
                    file=file,
                    line=lineno,
                    directive=line[pos:].split(None, 1)[0][:40],
                    message="malformed tag: expected <tag arguments> or </tag>",
                )
            )
            return
        end = _directive_end(line, pos)
        text = line[pos:end].strip()
        parts = text.split(None, 1)
        name = parts[0]
        rest = parts[1].strip() if len(parts) > 1 else ""
        args, quoted = split_words(rest)
        out.append(
            Token(
                kind=TokenKind.DIRECTIVE,
                file=file,
                line=lineno,
                name=name.lower(),
                args=args,
                rest=rest,
                text=text,
                quoted=quoted,
            )
        )
        pos = end


def lex(text: str, file: str) -> tuple[list[Token], list[Diagnostic]]:
    """Tokens of ``text`` (named ``file`` in diagnostics) and any lexical problems."""
    tokens: list[Token] = []
    diags: list[Diagnostic] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line, open_quote = _strip_comment(raw.removesuffix("\r"))
        if open_quote:
            word = line.split(None, 1)[0] if line.split() else '"'
            diags.append(
                Diagnostic(file=file, line=lineno, directive=word[:40], message="unclosed quote")
            )
            continue
        if "\x00" in line:
            diags.append(
                Diagnostic(file=file, line=lineno, directive="", message="NUL byte in line")
            )
            continue
        _lex_line(line, file, lineno, tokens, diags)
    return tokens, diags
