"""RFC 3464 DSNs: who gets one, and bytes that Python's email package reads back."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import parsedate_to_datetime

import pytest

from sluice.bounce import (
    Diagnostic,
    Dsn,
    DsnAction,
    DsnEntry,
    Phase,
    build_dsn,
    dsn_recipients,
)
from sluice.bounce.dsn import MAX_LINE
from sluice.message import Envelope, Notify, Recipient

NOW = 1_700_000_000.0
ORIGINAL = (
    b"From: Shop <news@shop.test>\r\n"
    b"To: <r2@dest.test>\r\n"
    b"Subject: Your order\r\n"
    b"Message-ID: <seq-7@test>\r\n"
    b"X-Test-Seq: 7\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b"your order has shipped.\r\n"
)


def _envelope(**kw: object) -> Envelope:
    fields: dict[str, object] = {
        "sender": "bounces@shop.test",
        "recipients": (
            Recipient(address="r1@dest.test"),
            Recipient(address="r2@dest.test", orcpt="rfc822;alias@dest.test"),
            Recipient(address="r3@dest.test"),
        ),
        "env_id": "CAMPAIGN-42.7",
        "arrival": NOW - 3600,
    }
    fields.update(kw)
    return Envelope(**fields)  # type: ignore[arg-type]


def _rejected(reply: str = "550 5.1.1 <r2@dest.test>: user unknown") -> Diagnostic:
    return Diagnostic.from_text(
        reply, Phase.RCPT, local_status="4.0.0", remote_mta="mx1.dest.test", remote_ip="127.0.0.5"
    )


def _build(
    envelope: Envelope | None = None,
    entries: Sequence[DsnEntry] | None = None,
    original: bytes = ORIGINAL,
    **kw: object,
) -> Dsn:
    env = envelope or _envelope()
    if entries is None:
        entries = [
            DsnEntry(index=1, action=DsnAction.FAILED, diagnostic=_rejected(), last_attempt=NOW)
        ]
    return build_dsn(
        envelope=env,
        entries=entries,
        original=original,
        reporting_mta="mta1.sluice.test",
        postmaster="postmaster@sluice.test",
        now=NOW,
        make_id=lambda: "dsn-1@mta1.sluice.test",
        **kw,  # type: ignore[arg-type]
    )


def _parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _status_blocks(msg: Message) -> list[Message]:
    parts = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(parts) == 1
    blocks = parts[0].get_payload()
    assert isinstance(blocks, list)
    return blocks


def _assert_wire_clean(data: bytes, *, seven_bit: bool = True) -> None:
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"
    assert data.endswith(b"\r\n")
    for line in data.split(b"\r\n"):
        assert len(line) <= MAX_LINE
    if seven_bit:
        assert all(b < 0x80 for b in data)
        assert b"\x00" not in data


# --- structure -----------------------------------------------------------------------------


def test_failed_dsn_is_a_multipart_report_with_three_parts() -> None:
    dsn = _build()
    _assert_wire_clean(dsn.data)
    msg = _parse(dsn.data)
    assert not msg.defects
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    assert len(_status_blocks(msg)) == 2  # per-message block + one recipient


def test_top_level_headers() -> None:
    dsn = _build()
    msg = _parse(dsn.data)
    assert msg["From"] == "Mail Delivery System <postmaster@sluice.test>"
    assert msg["To"] == "<bounces@shop.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<dsn-1@mta1.sluice.test>"
    assert "not delivered" in str(msg["Subject"])
    assert parsedate_to_datetime(str(msg["Date"])) == datetime.fromtimestamp(NOW, UTC)
    assert dsn.message_id == "<dsn-1@mta1.sluice.test>"


def test_dsn_envelope_is_null_sender_to_the_original_sender() -> None:
    dsn = _build()
    assert (dsn.mail_from, dsn.rcpt_to) == ("", "bounces@shop.test")
    env = dsn.envelope(vmta="transactional", arrival=NOW)
    assert env.sender == ""
    assert [r.address for r in env.recipients] == ["bounces@shop.test"]
    assert env.vmta == "transactional"
    # and that DSN, should it fail in turn, gets no DSN of its own
    assert dsn_recipients(env, [0], DsnAction.FAILED) == ()


def test_delivery_status_fields() -> None:
    msg = _parse(_build().data)
    per_message, rcpt = _status_blocks(msg)
    assert per_message["Reporting-MTA"] == "dns; mta1.sluice.test"
    assert per_message["Original-Envelope-Id"] == "CAMPAIGN-42.7"
    assert parsedate_to_datetime(str(per_message["Arrival-Date"])) == datetime.fromtimestamp(
        NOW - 3600, UTC
    )
    assert rcpt["Original-Recipient"] == "rfc822; alias@dest.test"
    assert rcpt["Final-Recipient"] == "rfc822; r2@dest.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Remote-MTA"] == "dns; mx1.dest.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <r2@dest.test>: user unknown"
    assert parsedate_to_datetime(str(rcpt["Last-Attempt-Date"])) == datetime.fromtimestamp(NOW, UTC)


def test_without_envid_orcpt_or_arrival_the_fields_are_absent() -> None:
    env = _envelope(env_id=None, arrival=0.0)
    msg = _parse(
        _build(env, [DsnEntry(index=0, action=DsnAction.FAILED, diagnostic=_rejected())]).data
    )
    per_message, rcpt = _status_blocks(msg)
    assert per_message["Original-Envelope-Id"] is None
    assert per_message["Arrival-Date"] is None
    assert rcpt["Original-Recipient"] is None
    assert rcpt["Last-Attempt-Date"] is None


def test_several_recipients_in_one_dsn() -> None:
    entries = [
        DsnEntry(index=0, action=DsnAction.FAILED, diagnostic=_rejected("550 5.2.1 disabled")),
        DsnEntry(index=2, action=DsnAction.FAILED, diagnostic=_rejected("552 5.2.2 full")),
    ]
    msg = _parse(_build(entries=entries).data)
    blocks = _status_blocks(msg)
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; r1@dest.test",
        "rfc822; r3@dest.test",
    ]
    assert [b["Status"] for b in blocks[1:]] == ["5.2.1", "5.2.2"]
    human = msg.get_payload(0)
    assert isinstance(human, Message)
    text = human.get_payload()
    assert isinstance(text, str)
    assert "<r1@dest.test>" in text
    assert "<r3@dest.test>" in text
    assert "mx1.dest.test said: 552 5.2.2 full" in text


def test_local_failure_uses_a_private_diagnostic_type_and_no_remote_mta() -> None:
    diag = Diagnostic.local("5.1.10", "nullmx.test publishes a null MX (RFC 7505)")
    msg = _parse(_build(entries=[DsnEntry(index=0, action=DsnAction.FAILED, diagnostic=diag)]).data)
    rcpt = _status_blocks(msg)[1]
    assert rcpt["Status"] == "5.1.10"
    assert rcpt["Remote-MTA"] is None
    assert rcpt["Diagnostic-Code"] == "X-Sluice; nullmx.test publishes a null MX (RFC 7505)"


# --- the returned message ------------------------------------------------------------------


def test_failed_dsn_returns_the_whole_message() -> None:
    msg = _parse(_build().data)
    returned = msg.get_payload(2)
    assert isinstance(returned, Message)
    inner = returned.get_payload(0)
    assert isinstance(inner, Message)
    assert inner["Message-ID"] == "<seq-7@test>"
    assert inner.get_payload() == "Hello,\r\nyour order has shipped.\r\n"


def test_ret_hdrs_returns_only_the_header() -> None:
    dsn = _build(_envelope(ret="HDRS"))
    _assert_wire_clean(dsn.data)
    msg = _parse(dsn.data)
    returned = msg.get_payload(2)
    assert isinstance(returned, Message)
    assert returned.get_content_type() == "text/rfc822-headers"
    text = returned.get_payload()
    assert isinstance(text, str)
    assert "Message-ID: <seq-7@test>" in text
    assert "shipped" not in text
    assert b"shipped" not in dsn.data


def test_ret_full_and_lowercase_hdrs() -> None:
    assert b"shipped" in _build(_envelope(ret="FULL")).data
    assert b"shipped" not in _build(_envelope(ret="hdrs")).data


def test_size_cap_returns_only_the_header() -> None:
    big = ORIGINAL + b"x" * 70 + b"\r\n"
    assert b"shipped" in _build(original=big, return_limit=len(big)).data
    dsn = _build(original=big, return_limit=len(big) - 1)
    assert b"shipped" not in dsn.data
    assert b"Content-Type: text/rfc822-headers" in dsn.data


def test_header_over_the_cap_is_cut_at_a_line_end() -> None:
    dsn = _build(original=ORIGINAL, return_limit=40)
    msg = _parse(dsn.data)
    text = msg.get_payload(2).get_payload()  # type: ignore[union-attr]
    assert text.startswith("From: Shop <news@shop.test>\r\n")
    assert "Subject" not in text


def test_8bit_message_is_returned_as_quoted_printable_header() -> None:
    original = "Subject: Café\r\nFrom: a@shop.test\r\n\r\nGrüße\r\n".encode()
    dsn = _build(original=original)
    _assert_wire_clean(dsn.data)
    msg = _parse(dsn.data)
    returned = msg.get_payload(2)
    assert isinstance(returned, Message)
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned["Content-Transfer-Encoding"] == "quoted-printable"
    decoded = returned.get_payload(decode=True)
    assert isinstance(decoded, bytes)
    assert decoded.replace(b"\r\n", b"\n") == "Subject: Café\nFrom: a@shop.test\n".encode()


def test_overlong_line_is_not_returned_raw() -> None:
    original = b"Subject: x\r\nX-Long: " + b"y" * 1200 + b"\r\n\r\nbody\r\n"
    dsn = _build(original=original)
    _assert_wire_clean(dsn.data)
    assert b"body" not in dsn.data.split(b"text/rfc822-headers", 1)[1]


def test_bare_lf_original_comes_back_canonical() -> None:
    dsn = _build(original=ORIGINAL.replace(b"\r\n", b"\n"))
    _assert_wire_clean(dsn.data)
    assert b"your order has shipped.\r\n" in dsn.data


def test_boundary_never_occurs_in_the_content() -> None:
    first = _build()
    msg = _parse(first.data)
    boundary = msg.get_boundary()
    assert boundary is not None
    original = ORIGINAL + f"--{boundary}\r\n".encode()
    second = _parse(_build(original=original).data)
    assert second.get_boundary() != boundary
    assert len(second.get_payload()) == 3


# --- delays, successes, plain-text format --------------------------------------------------


def test_delay_dsn() -> None:
    env = _envelope(recipients=(Recipient(address="r1@dest.test", notify=Notify.DELAY),))
    diag = _rejected("451 4.7.1 greylisted, try again later")
    entry = DsnEntry(
        index=0,
        action=DsnAction.DELAYED,
        diagnostic=diag,
        last_attempt=NOW,
        will_retry_until=NOW + 86400,
    )
    dsn = _build(env, [entry])
    msg = _parse(dsn.data)
    assert "delayed" in str(msg["Subject"])
    rcpt = _status_blocks(msg)[1]
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.7.1"
    until = parsedate_to_datetime(str(rcpt["Will-Retry-Until"]))
    assert until == datetime.fromtimestamp(NOW + 86400, UTC)
    assert msg.get_payload(2).get_content_type() == "text/rfc822-headers"  # type: ignore[union-attr]


@pytest.mark.parametrize("action", [DsnAction.DELIVERED, DsnAction.RELAYED])
def test_success_dsn(action: DsnAction) -> None:
    diag = Diagnostic.from_text("250 2.0.0 OK", Phase.DOT, local_status="2.0.0")
    dsn = _build(entries=[DsnEntry(index=0, action=action, diagnostic=diag)])
    msg = _parse(dsn.data)
    assert "message delivered" in str(msg["Subject"])
    rcpt = _status_blocks(msg)[1]
    assert (rcpt["Action"], rcpt["Status"]) == (action.value, "2.0.0")
    assert b"shipped" not in dsn.data  # only failures return the content (RFC 3461 §4.3)


def test_mixed_report_is_titled_by_the_failure() -> None:
    ok = Diagnostic.from_text("250 ok", Phase.DOT, local_status="2.0.0")
    entries = [
        DsnEntry(index=0, action=DsnAction.RELAYED, diagnostic=ok),
        DsnEntry(index=1, action=DsnAction.FAILED, diagnostic=_rejected()),
    ]
    msg = _parse(_build(entries=entries).data)
    assert "not delivered" in str(msg["Subject"])
    assert [b["Action"] for b in _status_blocks(msg)[1:]] == ["relayed", "failed"]


def test_plain_text_format_puts_the_fields_in_text_plain() -> None:
    dsn = _build(plain_text=True)
    msg = _parse(dsn.data)
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain", "message/rfc822"]
    fields = parts[1].get_payload()
    assert "Final-Recipient: rfc822; r2@dest.test" in fields
    assert "Status: 5.1.1" in fields


def test_date_in_another_zone() -> None:
    tz = timezone(timedelta(hours=-5))
    msg = _parse(_build(tz=tz).data)
    assert str(msg["Date"]).endswith("-0500")
    assert parsedate_to_datetime(str(msg["Date"])).timestamp() == NOW


# --- long, odd and international text ------------------------------------------------------


def test_long_diagnostics_are_folded_within_line_limits() -> None:
    words = " ".join(["word"] * 400)
    blob = "z" * 2500
    diag = _rejected(f"550 5.7.1 {words} {blob}")
    dsn = _build(entries=[DsnEntry(index=0, action=DsnAction.FAILED, diagnostic=diag)])
    _assert_wire_clean(dsn.data)
    rcpt = _status_blocks(_parse(dsn.data))[1]
    assert str(rcpt["Diagnostic-Code"]).startswith("smtp; 550 5.7.1 word word")
    assert rcpt["Status"] == "5.7.1"


def test_non_ascii_reply_text_is_made_ascii() -> None:
    diag = _rejected("550 5.1.1 Benutzer unbekannt: für <r2@dest.test>")
    dsn = _build(entries=[DsnEntry(index=1, action=DsnAction.FAILED, diagnostic=diag)])
    _assert_wire_clean(dsn.data)
    assert "f?r" in str(_status_blocks(_parse(dsn.data))[1]["Diagnostic-Code"])


def test_non_ascii_recipient_uses_utf8_address_type() -> None:
    env = _envelope(recipients=(Recipient(address="jürgen@dest.test"),), smtputf8=True)
    dsn = _build(env, [DsnEntry(index=0, action=DsnAction.FAILED, diagnostic=_rejected())])
    _assert_wire_clean(dsn.data)
    rcpt = _status_blocks(_parse(dsn.data))[1]
    assert rcpt["Final-Recipient"] == "utf-8; j\\x{FC}rgen@dest.test"


def test_non_ascii_sender_needs_smtputf8() -> None:
    env = _envelope(sender="rücklauf@shop.test")
    dsn = _build(env)
    assert dsn.smtputf8
    assert dsn.envelope().smtputf8
    assert "To: <rücklauf@shop.test>\r\n".encode() in dsn.data
    body = dsn.data.split(b"\r\n\r\n", 1)[1]
    _assert_wire_clean(body)  # only the To: header carries UTF-8


# --- who gets a DSN ------------------------------------------------------------------------


def test_t29_one_dsn_for_the_failed_recipient_only() -> None:
    """450 to rcpt1, 550 to rcpt2, 250 to rcpt3: only rcpt2's failure is reported."""
    env = _envelope()
    assert dsn_recipients(env, [1], DsnAction.FAILED) == (1,)
    assert dsn_recipients(env, [0], DsnAction.DELAYED) == ()  # no NOTIFY: no delay reports
    assert dsn_recipients(env, [2], DsnAction.RELAYED) == ()
    dsn = _build(env, [DsnEntry(index=1, action=DsnAction.FAILED, diagnostic=_rejected())])
    msg = _parse(dsn.data)
    assert dsn.rcpt_to == env.sender
    assert dsn.mail_from == ""
    blocks = _status_blocks(msg)
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; r2@dest.test"]


def test_no_dsn_for_the_null_sender() -> None:
    env = _envelope(sender="")
    assert dsn_recipients(env, [0, 1, 2], DsnAction.FAILED) == ()
    with pytest.raises(ValueError, match="null reverse-path"):
        _build(env)


@pytest.mark.parametrize(
    ("notify", "failed", "delayed", "success"),
    [
        (Notify.NONE, True, False, False),
        (Notify.NEVER, False, False, False),
        (Notify.FAILURE, True, False, False),
        (Notify.DELAY, False, True, False),
        (Notify.SUCCESS, False, False, True),
        (Notify.FAILURE | Notify.DELAY, True, True, False),
        (Notify.SUCCESS | Notify.FAILURE | Notify.DELAY, True, True, True),
    ],
)
def test_notify_decides(notify: Notify, failed: bool, delayed: bool, success: bool) -> None:
    env = _envelope(recipients=(Recipient(address="r@dest.test", notify=notify),))
    assert bool(dsn_recipients(env, [0], DsnAction.FAILED)) is failed
    assert bool(dsn_recipients(env, [0], DsnAction.DELAYED)) is delayed
    assert bool(dsn_recipients(env, [0], DsnAction.DELIVERED)) is success
    assert bool(dsn_recipients(env, [0], DsnAction.RELAYED)) is success


def test_dsn_recipients_dedupes_and_keeps_order() -> None:
    env = _envelope()
    assert dsn_recipients(env, [2, 0, 2, 0], DsnAction.FAILED) == (2, 0)


def test_dsn_recipients_checks_indexes() -> None:
    with pytest.raises(ValueError, match="out of range"):
        dsn_recipients(_envelope(), [3], DsnAction.FAILED)


def test_build_dsn_checks_its_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        _build(entries=[])
    with pytest.raises(ValueError, match="out of range"):
        _build(entries=[DsnEntry(index=9, action=DsnAction.FAILED, diagnostic=_rejected())])


def test_message_id_brackets_are_added_once() -> None:
    for raw in ("a@b", "<a@b>"):
        dsn = build_dsn(
            envelope=_envelope(),
            entries=[DsnEntry(index=0, action=DsnAction.FAILED, diagnostic=_rejected())],
            original=ORIGINAL,
            reporting_mta="m",
            postmaster="p@m",
            now=NOW,
            make_id=lambda raw=raw: raw,  # type: ignore[misc]
        )
        assert dsn.message_id == "<a@b>"
