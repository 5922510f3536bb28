"""Fault instructions in local parts, the message recorder and the ledger's arithmetic."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.sim import Faults, Ledger, LedgerEntry, RecipientFault, body_sha256
from sluice.sim import parse_recipient_fault as parse
from sluice.sim._faults import fault_reply
from sluice.sim._ledger import MessageRecorder


def test_recipient_instructions() -> None:
    assert parse("t450-bob@x.test") == RecipientFault(rcpt_code=450)
    assert parse("t550-ann@x.test") == RecipientFault(rcpt_code=550)
    assert parse("d554-ann@x.test") == RecipientFault(data_code=554)
    assert parse("hangup-1@x.test") == RecipientFault(hangup=True)
    for ordinary in ("bob@x.test", "t45-x@y", "t350-x@y", "t650-x@y", "tabc-x@y", "t450x@y", "d"):
        assert parse(ordinary) is None, ordinary


def test_fault_replies() -> None:
    assert fault_reply(550).to_bytes() == (
        b"550 5.1.1 Recipient address rejected: user unknown (simulated)\r\n"
    )
    assert fault_reply(450).to_bytes().startswith(b"450 4.2.1 ")
    assert fault_reply(499).to_bytes() == b"499 4.0.0 Simulated failure (simulated)\r\n"
    assert fault_reply(550) is fault_reply(550)
    with pytest.raises(ValueError, match=">= 0"):
        Faults(hangup_every=-1)


MESSAGE = (
    b"From: a@x.test\r\nMessage-ID: <42@x.test>\r\nX-Test-Seq:\r\n  17\r\n"
    b"Subject: hi\r\n\r\nline one\r\n.dotted\r\n\r\nend\r\n"
)
BODY = b"line one\n.dotted\n\nend"  # LF line ends, trailing newlines stripped


@given(st.lists(st.integers(1, len(MESSAGE) - 1), unique=True).map(sorted))
def test_recorder_finds_headers_and_hashes_the_body_at_any_split(cuts: list[int]) -> None:
    rec = MessageRecorder()
    prev = 0
    for cut in [*cuts, len(MESSAGE)]:
        rec.feed(MESSAGE[prev:cut])
        prev = cut
    message_id, seq, digest = rec.finish()
    assert message_id == "<42@x.test>"
    assert seq == "17"  # folded value, unfolded and stripped
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert digest == body_sha256(MESSAGE)


def test_body_sha256_normalises_line_ends_and_trailing_newlines() -> None:
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert body_sha256(lf) == body_sha256(MESSAGE)
    assert body_sha256(MESSAGE[:-2]) == body_sha256(MESSAGE)
    assert body_sha256(MESSAGE + b"\r\n\r\n") == body_sha256(MESSAGE)
    assert body_sha256(b"Only: headers\r\n") == hashlib.sha256(b"").hexdigest()
    rec = MessageRecorder()
    rec.feed(b"Only: headers\r\n")
    assert rec.finish() == (None, None, hashlib.sha256(b"").hexdigest())
    # Newlines inside the body count; only trailing ones are dropped, across chunks too.
    rec = MessageRecorder()
    for part in (b"A: b\r\n\r\nx\r", b"\n\r\n", b"\r\n", b"y\r\n\r\n"):
        rec.feed(part)
    assert rec.finish()[2] == hashlib.sha256(b"x\n\n\ny").hexdigest()


@given(st.binary(max_size=60), st.lists(st.integers(0, 80), unique=True).map(sorted))
def test_streaming_digest_equals_the_one_shot_digest(body: bytes, cuts: list[int]) -> None:
    message = b"Subject: x\r\n\r\n" + body.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r")
    rec = MessageRecorder()
    prev = 0
    for cut in [c for c in cuts if c < len(message)] + [len(message)]:
        rec.feed(message[prev:cut])
        prev = cut
    assert rec.finish()[2] == body_sha256(message)


def entry(key: str, *rcpts: str, ack: bool = True) -> LedgerEntry:
    return LedgerEntry(
        at=0.0,
        source_ip="127.0.0.3",
        mail_from="a@x.test",
        recipients=rcpts or ("b@y.test",),
        message_id=f"<{key}@x>",
        test_seq=key,
        body_sha256="0" * 64,
        size=10,
        acknowledged=ack,
    )


def test_ledger_counts_lost_duplicates_phantoms() -> None:
    ledger = Ledger()
    for e in (
        entry("1"),
        entry("2"),
        entry("2"),
        entry("3", ack=False),
        entry("9"),
        entry("4", ack=False),
        entry("4"),
    ):
        ledger.add(e)
    check = ledger.check_messages(["1", "2", "3", "4"])
    assert check.lost == {"3"}
    assert check.duplicates == {"2": 2}
    assert check.phantoms == {"9"}
    assert check.unacknowledged == {"3": 1, "4": 1}
    assert not check.clean
    assert len(ledger) == 7
    clean = Ledger()
    clean.add(entry("1", "a@y", "b@y"))
    assert clean.check_messages(["1"]).clean
    per_rcpt = clean.check_recipients(["1 a@y", "1 b@y", "1 c@y"])
    assert per_rcpt.lost == {"1 c@y"}
