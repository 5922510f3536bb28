"""Fuzz (Hypothesis): random bytes into a server Connection give events or
RemoteProtocolError, nothing else, with the buffer bounded; DATA content matches a simple
byte-level model of RFC 5321 §4.1.1.4/§4.5.2 whatever the chunking."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_helpers import Transcript, drain, in_data, new_server

from sluice import smtp

SMTPISH = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"\r\n",
                b"\n",
                b"\r",
                b".",
                b"\x00",
                b"MAIL FROM:<a@x.test>\r\n",
                b"RCPT TO:<b@y.test>\r\n",
                b"DATA\r\n",
                b"BDAT 5\r\n",
                b"BDAT 3 LAST\r\n",
                b"RSET\r\n",
                b"EHLO x\r\n",
                b"STARTTLS\r\n",
                b"AUTH PLAIN\r\n",
                b"\r\n.\r\n",
                "MAIL FROM:<ü@x> SMTPUTF8\r\n".encode(),
            ]
        ),
    ),
    max_size=30,
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(SMTPISH, min_size=1, max_size=3).map(
        lambda parts: b"".join(b"".join(p) for p in parts)
    ),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.sampled_from(list(smtp.BareLineEnding)),
    st.booleans(),
)
def test_random_bytes_give_events_or_remote_errors(
    data: bytes, cuts: list[int], policy: smtp.BareLineEnding, pipelining_rule: bool
) -> None:
    conn = new_server(bare_line_ending=policy, forbid_unauth_pipelining=pipelining_rule)
    t = Transcript()
    try:
        for piece in _chunks(data, cuts):
            conn.receive_data(piece)
            drain(conn, t)
            if conn.state in (smtp.State.CLOSED, smtp.State.TLS_HANDOFF):
                return
            assert conn.buffered_bytes <= conn.limits.line_scan_limit
        conn.receive_data(b"")
        drain(conn, t)
    except smtp.RemoteProtocolError as exc:
        error: smtp.RemoteProtocolError | None = exc
    else:
        error = None
    if error is not None:
        assert conn.state is smtp.State.ERROR
        assert error.reply is not None
        return
    for message in t.messages:
        # What the engine passes on is canonical: every CR and LF is part of a CRLF.
        assert message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n")


def model(data: bytes) -> bytes | None:
    """The content of DATA per RFC 5321, by the book: the first CRLF.CRLF (the DATA line's
    CRLF counts as the first CRLF) ends it; a dot after a CRLF is removed."""
    stream = b"\r\n" + data
    end = stream.find(b"\r\n.\r\n")
    if end < 0:
        return None
    return stream[: end + 2].replace(b"\r\n.", b"\r\n")[2:]


def _normalize(b: bytes) -> bytes:
    return b.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\x00", b"\r\n.\r\n", b"bc"]),
        max_size=40,
    ).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    st.sampled_from(list(smtp.BareLineEnding)),
)
def test_data_content_matches_the_model(
    data: bytes, cuts: list[int], policy: smtp.BareLineEnding
) -> None:
    expected = model(data)
    conn = in_data(bare_line_ending=policy)
    t = Transcript()
    try:
        for piece in _chunks(data, cuts):
            conn.receive_data(piece)
            drain(conn, t)
            assert conn.buffered_bytes <= 4 or t.ends
    except smtp.RemoteProtocolError:
        assert policy is smtp.BareLineEnding.REJECT
        # Only content with a bare CR or LF is fatal
        raw = expected if expected is not None else model(data + b"\r\n.\r\n")
        assert raw is not None
        assert _normalize(raw) != raw
        return
    if expected is None:
        assert t.ends == []
        return
    (end,) = t.ends
    if b"\x00" in expected:
        assert end.reject is not None
        assert end.reject.code == 554
        return
    assert end.reject is None
    want = _normalize(expected)
    if policy is smtp.BareLineEnding.REJECT:
        assert want == expected
    assert t.messages == [want]
    assert end.size == len(want)
