"""The pure request validator and message builder (sluice.mgmt.parse_inject)."""

from __future__ import annotations

import email
import email.policy
from typing import Any

import pytest

from sluice.mgmt import ApiError, parse_inject

DATE = "Fri, 15 Jan 2027 08:00:00 +0000"


def build(doc: dict[str, Any], *, max_recipients: int = 1000, long_lines_ok: bool = False) -> Any:
    return parse_inject(
        doc,
        max_recipients=max_recipients,
        long_lines_ok=long_lines_ok,
        date=DATE,
        message_id="<id.1@mta.test>",
    )


def base(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"from": "a@src.test", "to": ["b@sink.test"], "subject": "s", "text": ""}
    doc.update(overrides)
    return doc


def lines_of(content: bytes) -> list[bytes]:
    return content.split(b"\r\n")


def test_empty_text_gives_an_empty_body() -> None:
    req = build(base())
    assert req.content.endswith(b"Content-Transfer-Encoding: 7bit\r\n\r\n")
    assert req.message_id == "<id.1@mta.test>"


def test_long_ascii_line_switches_to_quoted_printable() -> None:
    req = build(base(text="y" * 1500))
    assert b"Content-Transfer-Encoding: quoted-printable" in req.content
    assert all(len(line) <= 76 for line in lines_of(req.content.split(b"\r\n\r\n", 1)[1]))
    parsed = email.message_from_bytes(req.content, policy=email.policy.default)
    assert parsed.get_content().rstrip("\r\n") == "y" * 1500


def test_many_recipients_fold_the_to_field() -> None:
    rcpts = [f"user{k:04d}@sink.test" for k in range(300)]
    req = build(base(to=rcpts))
    head = req.content.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in lines_of(head))
    parsed = email.message_from_bytes(req.content, policy=email.policy.default)
    assert [a.addr_spec for a in parsed["To"].addresses] == rcpts


def test_unfoldable_value_is_refused() -> None:
    name = "X-" + "n" * 74
    with pytest.raises(ApiError) as info:
        build(base(headers={name: "v" * 998}))
    assert info.value.status == 400
    assert info.value.field == f"headers.{name}"
    assert "folded" in info.value.error


def test_header_name_too_long() -> None:
    with pytest.raises(ApiError, match="header name"):
        build(base(headers={"X-" + "n" * 75: "v"}))


def test_unknown_and_mixed_fields() -> None:
    with pytest.raises(ApiError, match="unknown field") as info:
        build(base(priority="high"))
    assert info.value.field == "priority"
    with pytest.raises(ApiError, match="other request form") as info:
        build({"mail_from": "a@src.test", "rcpt_to": ["b@sink.test"], "content": "x", "to": []})
    assert info.value.field == "to"


def test_recipient_limit_is_the_policys() -> None:
    with pytest.raises(ApiError, match="more than 1 recipients"):
        build(base(to=["a@sink.test", "b@sink.test"]), max_recipients=1)


def test_raw_long_lines_flag() -> None:
    doc = {"mail_from": "a@src.test", "rcpt_to": ["b@sink.test"], "content": "x" * 1200}
    req = build(doc, long_lines_ok=True)
    assert req.long_lines
    assert req.content == b"x" * 1200 + b"\r\n"
    assert not req.body_8bit
    req = build({**doc, "content": "Subject: é\n\nü"})
    assert req.body_8bit


def test_error_body_shape() -> None:
    with pytest.raises(ApiError) as info:
        build(base(subject="a\nb"))
    assert info.value.body() == {"error": "line feed (LF) not allowed", "field": "subject"}
