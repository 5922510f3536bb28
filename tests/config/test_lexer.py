"""The lexer: comments, quotes, several blocks on one line, the seed's XML-style form."""

from __future__ import annotations

from sluice.config.lexer import Token, TokenKind, lex


def _kinds(tokens: list[Token]) -> list[tuple[TokenKind, str, int]]:
    return [(t.kind, t.name, t.line) for t in tokens]


def test_comments_after_values_and_not_inside_quotes() -> None:
    tokens, diags = lex(
        'max-smtp-out 20   # per queue\n# whole line\n\nbackoff-notify "a#b@example.com"\n',
        "f.conf",
    )
    assert not diags
    assert tokens[0].args == ("20",)
    assert tokens[1].args == ("a#b@example.com",)
    assert tokens[1].line == 4


def test_empty_quoted_value_is_marked() -> None:
    tokens, _ = lex('backoff-notify ""\nqueue-to "hotmail.queue"', "f")
    assert tokens[0].quoted
    assert tokens[0].args == ("",)
    assert tokens[1].quoted
    assert tokens[1].args == ("hotmail.queue",)


def test_several_blocks_and_directives_on_one_line() -> None:
    line = "<virtual-mta ip11>  smtp-source-host 203.0.113.11 m11.example.com  </virtual-mta>"
    tokens, diags = lex(line, "f")
    assert not diags
    assert _kinds(tokens) == [
        (TokenKind.OPEN, "virtual-mta", 1),
        (TokenKind.DIRECTIVE, "smtp-source-host", 1),
        (TokenKind.CLOSE, "virtual-mta", 1),
    ]
    assert tokens[0].args == ("ip11",)
    assert tokens[1].args == ("203.0.113.11", "m11.example.com")


def test_xml_form_becomes_a_directive() -> None:
    tokens, diags = lex("<max-cpu-usage>90</max-cpu-usage>", "f")
    assert not diags
    assert tokens[0].kind is TokenKind.DIRECTIVE
    assert tokens[0].name == "max-cpu-usage"
    assert tokens[0].args == ("90",)
    assert tokens[0].xml_form


def test_regex_lines_keep_their_raw_text() -> None:
    tokens, _ = lex("    /mailbox +(is +)?full/   quota-issues\n", "f")
    assert tokens[0].text == "/mailbox +(is +)?full/   quota-issues"
    tokens, _ = lex("reply /421 .* Please try again later/   mode=backoff # Yahoo", "f")
    assert tokens[0].rest == "/421 .* Please try again later/   mode=backoff"


def test_tabs_and_crlf() -> None:
    tokens, _ = lex("max-smtp-out\t20\r\n<domain\tx.com>\r\n", "f")
    assert tokens[0].args == ("20",)
    assert tokens[1].args == ("x.com",)


def test_lexical_errors_are_diagnostics() -> None:
    tokens, diags = lex('postmaster "unclosed\n<domain x.com\nmax-smtp-out 1', "f")
    assert [(d.line, d.message) for d in diags] == [
        (1, "unclosed quote"),
        (2, "malformed tag: expected <tag arguments> or </tag>"),
    ]
    assert _kinds(tokens) == [(TokenKind.DIRECTIVE, "max-smtp-out", 3)]


def test_acct_file_pipe_argument() -> None:
    tokens, _ = lex("<acct-file |/usr/local/bin/acct_etl --logfile x.log>", "f")
    assert tokens[0].rest == "|/usr/local/bin/acct_etl --logfile x.log"
