"""T19 (HTTP half): no header or command injection through POST /api/v1/messages.

Every variant with CR, LF or NUL in subject, from, each recipient, a custom header's name or
value (and the other fields that reach a header or the envelope), and an over-long header
value, is refused with 400 and a JSON reason naming the field; nothing is stored. Valid
messages sent afterwards are stored exactly once each with no injected header.
"""

from __future__ import annotations

from typing import Any

import pytest
from mgmt_harness import MgmtHarness, header_block, header_names

BAD_CHARS = {"CR": "\r", "LF": "\n", "NUL": "\x00", "CRLF": "\r\n"}
#: What each bad character is called in the error text.
NAMES = {"CR": "CR", "LF": "LF", "NUL": "NUL", "CRLF": "CR"}


def structured(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "from": "sender@src.test",
        "to": ["one@sink.test", "two@sink.test"],
        "subject": "Hello",
        "headers": {"X-Campaign": "spring"},
        "text": "Body line\n",
    }
    doc.update(overrides)
    return doc


def raw(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "mail_from": "sender@src.test",
        "rcpt_to": ["one@sink.test", "two@sink.test"],
        "content": "Subject: raw\r\nFrom: sender@src.test\r\n\r\nBody\r\n",
    }
    doc.update(overrides)
    return doc


def _variants() -> list[tuple[str, dict[str, Any], str]]:
    """(id, request, field named in the answer) for every field x bad character."""
    out: list[tuple[str, dict[str, Any], str]] = []
    for label, ch in BAD_CHARS.items():
        inj = f"{ch}X-Injected: yes"
        cmd = f"{ch}RCPT TO:<evil@ext.test>"
        out += [
            (f"subject-{label}", structured(subject="Hi" + inj), "subject"),
            (f"from-{label}", structured(**{"from": "sender@src.test" + cmd}), "from"),
            (f"to0-{label}", structured(to=["one@sink.test" + cmd, "two@sink.test"]), "to[0]"),
            (f"to1-{label}", structured(to=["one@sink.test", "two@sink.test" + cmd]), "to[1]"),
            (
                f"header-value-{label}",
                structured(headers={"X-Campaign": "spring" + inj}),
                "headers.X-Campaign",
            ),
            (
                f"header-name-{label}",
                structured(headers={f"X-Campaign{ch}X-Injected": "yes"}),
                "headers.X-Campaign?X-Injected"
                if len(ch) == 1
                else "headers.X-Campaign??X-Injected",
            ),
            (f"from_name-{label}", structured(from_name="Shop" + inj), "from_name"),
            (f"job_id-{label}", structured(job_id="job1" + inj), "job_id"),
            (f"env_id-{label}", structured(env_id="env1" + inj), "env_id"),
            (f"raw-mail_from-{label}", raw(mail_from="sender@src.test" + cmd), "mail_from"),
            (
                f"raw-rcpt_to1-{label}",
                raw(rcpt_to=["one@sink.test", "two@sink.test" + cmd]),
                "rcpt_to[1]",
            ),
        ]
    return out


VARIANTS = _variants()


@pytest.mark.parametrize(("doc", "field"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_control_characters_are_refused_with_400_and_nothing_is_stored(
    mgmt: MgmtHarness, doc: dict[str, Any], field: str
) -> None:
    answer = mgmt.post(doc)
    assert answer.status == 400, answer.raw
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.body["field"] == field
    assert answer.body["error"]
    assert mgmt.stored() == []
    assert mgmt.received == []


@pytest.mark.parametrize("label", list(BAD_CHARS))
def test_error_text_names_the_character(mgmt: MgmtHarness, label: str) -> None:
    answer = mgmt.post(structured(subject="a" + BAD_CHARS[label] + "b"))
    assert answer.status == 400
    assert NAMES[label] in answer.body["error"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (structured(headers={"X-Long": "a" * 999}), "headers.X-Long"),
        (structured(headers={"X-Long": "é" * 500}), "headers.X-Long"),  # 1000 octets
        (structured(subject="s" * 999), "subject"),
        (structured(from_name="n" * 999), "from_name"),
        (raw(content="Subject: " + "s" * 990 + "\r\n\r\nBody\r\n"), "content"),
    ],
    ids=["custom-ascii", "custom-utf8", "subject", "from_name", "raw-header-line"],
)
def test_over_long_header_value_is_refused(
    mgmt: MgmtHarness, doc: dict[str, Any], field: str
) -> None:
    answer = mgmt.post(doc)
    assert answer.status == 400, answer.raw
    assert answer.body["field"] == field
    assert "998" in answer.body["error"]
    assert mgmt.stored() == []


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (structured(headers={"X Space": "v"}), "headers.X Space"),
        (structured(headers={"X:Colon": "v"}), "headers.X:Colon"),
        (structured(headers={"": "v"}), "headers."),
        (structured(headers={"X-Ü": "v"}), "headers.X-?"),
        (structured(headers={"Subject": "second subject"}), "headers.Subject"),
        (structured(headers={"content-type": "text/html"}), "headers.content-type"),
        (structured(headers={"X-A": "1", "x-a": "2"}), "headers.x-a"),
        (structured(headers={"X-Ctl": "a\x01b"}), "headers.X-Ctl"),
        (structured(subject="tab\tok but bell\x07"), "subject"),
        (structured(headers={"X-Num": 5}), "headers.X-Num"),
    ],
    ids=[
        "space",
        "colon",
        "empty",
        "non-ascii",
        "subject",
        "content-type",
        "dup",
        "ctl",
        "bell",
        "num",
    ],
)
def test_bad_custom_headers_are_refused(mgmt: MgmtHarness, doc: dict[str, Any], field: str) -> None:
    answer = mgmt.post(doc)
    assert answer.status == 400, answer.raw
    assert answer.body["field"] == field
    assert mgmt.stored() == []


def test_longest_allowed_value_is_stored_folded(mgmt: MgmtHarness) -> None:
    value = " ".join(["word"] * 199) + "abcd"  # 998 characters
    assert len(value) == 998
    answer = mgmt.post(structured(headers={"X-Long": value}))
    assert answer.status == 202, answer.raw
    (stored,) = mgmt.stored()
    head = stored.body.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    unfolded = [x for x in header_block(stored.body) if x.startswith(b"X-Long:")]
    assert unfolded == [b"X-Long: " + value.encode()]


def test_after_every_refusal_the_sink_count_is_what_was_requested(mgmt: MgmtHarness) -> None:
    """All malicious variants, then N good messages: exactly N stored, none injected."""
    for _, doc, _ in VARIANTS:
        assert mgmt.post(doc).status == 400
    n = 5
    ids = []
    for k in range(n):
        answer = mgmt.post(structured(subject=f"good {k}"))
        assert answer.status == 202, answer.raw
        ids.append(answer.body["id"])
    stored = mgmt.stored()
    assert [str(s.msg_id) for s in stored] == ids
    for s in stored:
        names = header_names(s.body)
        assert "x-injected" not in names
        assert b"X-Injected" not in s.body
        assert b"evil@" not in s.body
        assert [r.address for r in s.envelope.recipients] == ["one@sink.test", "two@sink.test"]
    assert len(mgmt.received) == n
