"""Properties: any reply classifies without raising; any DSN is clean, canonical and parses."""

from __future__ import annotations

import email
import email.policy
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.bounce import (
    Category,
    Classifier,
    Diagnostic,
    DsnAction,
    DsnEntry,
    Phase,
    build_dsn,
)
from sluice.bounce.dsn import MAX_LINE
from sluice.message import Envelope, Recipient

CLASSIFIER = Classifier.default()
CONFIGURED = Classifier.from_config([("/S3150/", "spam-related"), (r"^4\.", "other")])

reply_codes = st.sampled_from([250, 421, 450, 451, 452, 500, 503, 550, 551, 552, 553, 554])
statuses = st.builds(
    lambda c, s, d: f"{c}.{s}.{d}",
    st.sampled_from([2, 4, 5]),
    st.integers(0, 999),
    st.integers(0, 999),
)
texts = st.text(max_size=300)


@given(text=texts, status=st.one_of(st.none(), statuses, texts))
def test_any_text_classifies(text: str, status: str | None) -> None:
    assert isinstance(CLASSIFIER.classify(text, status), Category)
    assert isinstance(CONFIGURED.classify(text, status), Category)


@given(text=texts, phase=st.sampled_from(Phase))
def test_any_reply_text_becomes_a_diagnostic(text: str, phase: Phase) -> None:
    diag = Diagnostic.from_text(text, phase, local_status="4.4.2")
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", diag.status)
    assert "\n" not in diag.reply
    assert "\r" not in diag.reply
    assert isinstance(diag.classify(CLASSIFIER), Category)


@given(
    code=reply_codes,
    enhanced=st.one_of(st.none(), statuses, st.text(max_size=12)),
    lines=st.lists(texts, min_size=1, max_size=4),
    phase=st.sampled_from(Phase),
)
def test_any_reply_parts_become_a_diagnostic(
    code: int, enhanced: str | None, lines: list[str], phase: Phase
) -> None:
    diag = Diagnostic.from_reply(code, enhanced, lines, phase)
    assert diag.status[0] == str(code)[0]
    assert isinstance(diag.classify(CLASSIFIER), Category)


addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
        lambda s: "@" not in s
    ),
    st.from_regex(r"[a-z0-9]{1,20}\.test", fullmatch=True),
)


@settings(max_examples=60, deadline=None)
@given(
    rcpt=addresses,
    orcpt=st.one_of(st.none(), addresses.map(lambda a: f"rfc822;{a}")),
    envid=st.one_of(st.none(), st.text(max_size=120)),
    reply=texts,
    body=st.binary(max_size=400),
    ret=st.sampled_from([None, "FULL", "HDRS"]),
    action=st.sampled_from(DsnAction),
)
def test_any_dsn_is_canonical_7bit_and_parses(
    *,
    rcpt: str,
    orcpt: str | None,
    envid: str | None,
    reply: str,
    body: bytes,
    ret: str | None,
    action: DsnAction,
) -> None:
    env = Envelope(
        sender="bounces@shop.test",
        recipients=(Recipient(address=rcpt, orcpt=orcpt),),
        env_id=envid,
        ret=ret,
        arrival=1_700_000_000,
    )
    diag = Diagnostic.from_text(reply, Phase.RCPT, local_status="5.0.0", remote_mta="mx.test")
    dsn = build_dsn(
        envelope=env,
        entries=[DsnEntry(index=0, action=action, diagnostic=diag, last_attempt=1_700_000_100)],
        original=b"Subject: t\r\n\r\n" + body,
        reporting_mta="mta.test",
        postmaster="postmaster@mta.test",
        now=1_700_000_200,
        make_id=lambda: "id@mta.test",
        return_limit=300,
    )
    data = dsn.data
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", data) is None
    assert all(b < 0x80 for b in data)
    assert b"\x00" not in data
    assert all(len(line) <= MAX_LINE for line in data.split(b"\r\n"))
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 3
    status = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1
    blocks = status[0].get_payload()
    assert isinstance(blocks, list)
    assert len(blocks) == 2
    assert blocks[1]["Action"] == action.value
    assert blocks[1]["Status"] == diag.status
