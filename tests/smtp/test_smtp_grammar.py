"""RFC 5321 §4.1.2 grammar, xtext (RFC 3461 §4), enhanced status codes (RFC 3463)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.smtp._commands import (
    Session,
    _parse_mail,
    _parse_mail_full,
    _parse_rcpt,
    _parse_rcpt_full,
)
from sluice.smtp._grammar import (
    GrammarError,
    PathProblem,
    is_address_literal,
    is_domain,
    parse_ehlo_extensions,
    parse_path,
    xtext_decode,
    xtext_encode,
)
from sluice.smtp.limits import BareLineEnding, Limits
from sluice.smtp.replies import parse_enhanced


@pytest.mark.parametrize(
    ("token", "address", "route"),
    [
        ("<>", "", ()),
        ("<a@b.test>", "a@b.test", ()),
        ("<a.b+c@b-c.test>", "a.b+c@b-c.test", ()),
        ('<"a@b"@c.test>', '"a@b"@c.test', ()),
        ("<@r1.test,@r2.test:a@b.test>", "a@b.test", ("r1.test", "r2.test")),
        ("<v%ext.test@us.test>", "v%ext.test@us.test", ()),
        ("<ext.test!v@us.test>", "ext.test!v@us.test", ()),
        ("<a@[127.0.0.3]>", "a@[127.0.0.3]", ()),
    ],
)
def test_paths(token: str, address: str, route: tuple[str, ...]) -> None:
    path = parse_path(token, utf8=False)
    assert (path.address, path.route) == (address, route)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("a@b.test", PathProblem.SYNTAX),
        ("<a@b.test@c.test>", PathProblem.SYNTAX),
        ("<a..b@c.test>", PathProblem.SYNTAX),
        ("<.a@c.test>", PathProblem.SYNTAX),
        ("<a@>", PathProblem.SYNTAX),
        ("<a@b_c.test>", PathProblem.SYNTAX),
        ("<ext.test!v>", PathProblem.SYNTAX),
        ("<Postmaster>", PathProblem.SYNTAX),
        ("<ü@b.test>", PathProblem.NON_ASCII),
        ("<" + "a" * 65 + "@b.test>", PathProblem.NAME_TOO_LONG),
        ("<a@" + "b" * 300 + ">", PathProblem.PATH_TOO_LONG),
    ],
)
def test_bad_paths(token: str, problem: PathProblem) -> None:
    with pytest.raises(GrammarError) as info:
        parse_path(token, utf8=False)
    assert info.value.problem is problem


def test_domains_and_literals() -> None:
    assert is_domain("mx1.example.test")
    assert not is_domain("-x.test")
    assert not is_domain("x-.test")
    assert not is_domain("a..b")
    assert is_address_literal("[IPv6:2001:db8::1]")
    assert is_address_literal("[x-tag:content]")
    assert not is_address_literal("[1.2.3.256]")
    assert not is_address_literal("1.2.3.4")


@given(st.text(max_size=50))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii()
    assert "=" not in encoded
    assert " " not in encoded
    assert xtext_decode(encoded) == text


@pytest.mark.parametrize("bad", ["a+2", "a+zz", "a b", "a=b", "+C3"])
def test_bad_xtext(bad: str) -> None:
    with pytest.raises(GrammarError):
        xtext_decode(bad)


def test_ehlo_extensions_and_enhanced_codes() -> None:
    assert parse_ehlo_extensions(["mx", "pipelining", "SIZE 100", "AUTH PLAIN LOGIN", "b@d x"]) == {
        "PIPELINING": "",
        "SIZE": "100",
        "AUTH": "PLAIN LOGIN",
    }
    status = parse_enhanced("5.1.3")
    assert status is not None
    assert str(status) == "5.1.3"
    assert parse_enhanced("3.1.1") is None
    assert parse_enhanced("5.1") is None


# --- the server's fast path for the usual MAIL/RCPT path ------------------------------------

_PATH_ALPHABET = st.sampled_from(
    ["a", "Z", "0", "-", ".", "@", "<", ">", " ", '"', "\\", "[", "]", ":", ",", "+", "é", "\t"]
)


def _session(recipients: int = 0, limit: int | None = 100, utf8: bool = False) -> Session:
    s = Session(Limits(max_recipients=limit), BareLineEnding.REJECT)
    s.extensions = {"SIZE": "", "DSN": "", "8BITMIME": "", "SMTPUTF8": ""}
    s.recipients = recipients
    s.utf8 = utf8
    return s


@given(
    keyword=st.sampled_from(["FROM:", "from:", "To:", "TO:", "FROM: ", "TO: ", "FROM :"]),
    text=st.text(_PATH_ALPHABET, max_size=24),
    recipients=st.integers(0, 3),
    utf8=st.booleans(),
)
def test_plain_path_fast_path_agrees_with_full_parser(
    keyword: str, text: str, recipients: int, utf8: bool
) -> None:
    s = _session(recipients, limit=2, utf8=utf8)
    arg = keyword + text
    assert _parse_mail("MAIL", arg, s) == _parse_mail_full("MAIL", arg, s)
    assert _parse_rcpt("RCPT", arg, s) == _parse_rcpt_full("RCPT", arg, s)


@pytest.mark.parametrize(
    "path",
    [
        "<a@b.test>",
        " <a.b-c+d@x-y.test>",
        "<" + "l" * 64 + "@d.test>",
        "<" + "l" * 65 + "@d.test>",
        "<a@" + "d" * 255 + ">",
        "<a@" + "d" * 256 + ">",
        "<" + "l" * 60 + "@" + ("d" * 60 + ".") * 3 + "d" * 12 + ">",  # path 256 octets
        "<" + "l" * 60 + "@" + ("d" * 60 + ".") * 3 + "d" * 13 + ">",  # path 257 octets
        "<a@-b.test>",
        "<a@b-.test>",
        "<a@b.-c>",
        "<a@b-.c>",
        "<a..b@c>",
        "<.a@c>",
        "<a@b..c>",
        "<a@b> SIZE=10",
        "<a@b>x",
        "<Postmaster>",
        "<>",
    ],
)
def test_plain_path_fast_path_limits(path: str) -> None:
    for recipients, limit in ((0, 10), (10, 10), (0, None)):
        s = _session(recipients, limit)
        assert _parse_mail("MAIL", "FROM:" + path, s) == _parse_mail_full("MAIL", "FROM:" + path, s)
        assert _parse_rcpt("RCPT", "TO:" + path, s) == _parse_rcpt_full("RCPT", "TO:" + path, s)
