"""SMTP smuggling (test plan A1/T07): only <CRLF>.<CRLF> ends DATA; phantom messages = 0.

Each sequence from the test plan is sent after a body, followed by a smuggled transaction.
The engine must never produce a second message (no MailFrom/RcptTo event after the DATA):
under the reject policy the bare LF/CR ones are fatal (554 and close), the NUL ones give one
refused message; under the normalize policy there is exactly one message and it contains the
smuggled text as content. Every case is fed whole and one byte at a time.
"""

from __future__ import annotations

import pytest
from smtp_helpers import Transcript, feed, in_data

from sluice import smtp

SEQUENCES = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\n\n.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\n",
    b"\r\r\n.\r\r\n",
]
SMUGGLED = b"MAIL FROM:<s@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nsmuggled\r\n.\r\n"


def _run(seq: bytes, policy: smtp.BareLineEnding, bytewise: bool) -> tuple[Transcript, bool]:
    conn = in_data(bare_line_ending=policy)
    t = Transcript()
    wire = b"body" + seq + SMUGGLED
    pieces = [wire[i : i + 1] for i in range(len(wire))] if bytewise else [wire]
    error: smtp.RemoteProtocolError | None = None
    try:
        for piece in pieces:
            feed(conn, piece, t)
        feed(conn, b"", t, eof=True)
    except smtp.RemoteProtocolError as exc:
        error = exc
    if error is not None:
        assert error.reply is not None
        assert error.reply.code in (421, 554)
        assert conn.state is smtp.State.ERROR
        # The caller can still send the hint before closing.
        assert conn.send(error.reply).startswith(str(error.reply.code).encode())
    return t, error is not None


def _phantoms(t: Transcript) -> int:
    return len(t.of(smtp.MailFrom)) + len(t.of(smtp.RcptTo)) + max(0, len(t.ends) - 1)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("seq", SEQUENCES, ids=repr)
def test_reject_policy_never_smuggles(seq: bytes, bytewise: bool) -> None:
    t, failed = _run(seq, smtp.BareLineEnding.REJECT, bytewise)
    assert _phantoms(t) == 0
    assert t.messages == []  # nothing accepted
    has_bare = seq.replace(b"\r\n", b"").strip(b".\x00") != b""
    if has_bare:
        assert failed, "a bare CR or LF in DATA must be fatal under the reject policy"
    else:
        # \r\n\x00.\r\n and \r\n.\x00\r\n: one message, refused for its NUL
        assert not failed
        assert len(t.ends) == 1
        assert t.ends[0].reject is not None
        assert t.ends[0].reject.code == 554


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("seq", SEQUENCES, ids=repr)
def test_normalize_policy_keeps_one_message(seq: bytes, bytewise: bool) -> None:
    t, failed = _run(seq, smtp.BareLineEnding.NORMALIZE, bytewise)
    assert not failed
    assert _phantoms(t) == 0
    assert len(t.ends) == 1
    if b"\x00" in seq:
        assert t.ends[0].reject is not None
        assert t.messages == []
        return
    (message,) = t.messages
    assert b"MAIL FROM:<s@x.test>\r\n" in message
    assert b"smuggled\r\n" in message
    assert message.startswith(b"body")
    # Canonical: no bare CR or LF survives normalisation.
    assert message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n")


@pytest.mark.parametrize("policy", list(smtp.BareLineEnding))
def test_dot_then_eof_is_no_message(policy: smtp.BareLineEnding) -> None:
    conn = in_data(bare_line_ending=policy)
    t = feed(conn, b"body\r\n.", eof=True)
    assert t.ends == []
    assert t.messages == []
    assert isinstance(t.events[-1], smtp.ConnectionClosed)
    assert conn.state is smtp.State.CLOSED


def test_real_end_after_lookalikes_ends_the_one_message() -> None:
    conn = in_data(bare_line_ending=smtp.BareLineEnding.NORMALIZE)
    t = feed(conn, b"a\n.\nb\r.\rc\r\n.\r\nQUIT\r\n")
    assert t.messages == [b"a\r\n.\r\nb\r\n.\r\nc\r\n"]
    assert isinstance(t.events[-1], smtp.Quit)


def test_body_before_354_is_a_synchronization_error() -> None:
    """Test plan A8/T13: content pipelined with DATA is never taken as a message."""
    from smtp_helpers import new_server

    conn = new_server()
    t = Transcript()
    with pytest.raises(smtp.RemoteProtocolError) as info:
        feed(conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nbody\r\n.\r\n", t)
    assert info.value.reply is not None
    assert info.value.reply.code == 554
    assert str(info.value.reply.enhanced) == "5.5.0"
    assert t.ends == []


def test_data_without_valid_recipient_and_body_builds_nothing() -> None:
    from smtp_helpers import new_server

    conn = new_server(forbid_unauth_pipelining=False)
    t = feed(conn, b"MAIL FROM:<a@x.test>\r\nDATA\r\nMAIL FROM:<x@y>\r\n.\r\n")
    assert t.ends == []
    assert t.codes[:2] == [250, 503]
