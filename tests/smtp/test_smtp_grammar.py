"""RFC 5321 §4.1.2 grammar, xtext (RFC 3461 §4), enhanced status codes (RFC 3463)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
