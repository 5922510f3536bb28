"""POST /api/v1/messages against a real SqliteSpool and Injector: what is stored, when 202 is
sent, and how every refusal is answered (400/413/415/422/503, JSON, nothing stored)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mgmt_harness import HOSTNAME, MgmtHarness, header_block, header_names

from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.smtp.limits import LongLinePolicy
from sluice.spool import MemoryDisk, MemorySpool, SqliteSpool


def message(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "from": "news@src.test",
        "to": ["ann@sink.test", "bob@sink.test"],
        "subject": "Spring offers",
        "headers": {"X-Campaign": "spring-7", "Reply-To": "help@src.test"},
        "text": "Hello,\nour offers.\n",
    }
    doc.update(overrides)
    return doc


def test_structured_message_is_stored_once_with_expected_headers(mgmt: MgmtHarness) -> None:
    answer = mgmt.post(message())
    assert answer.status == 202, answer.raw
    assert answer.body["recipients"] == 2
    (stored,) = mgmt.stored()
    assert answer.body["id"] == str(stored.msg_id)
    env = stored.envelope
    assert env.sender == "news@src.test"
    assert [r.address for r in env.recipients] == ["ann@sink.test", "bob@sink.test"]
    assert env.source_ip == "127.0.0.1"
    names = header_names(stored.body)
    expected = [
        "received",
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "x-campaign",
        "reply-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ]
    assert names == expected
    lines = header_block(stored.body)
    assert b"From: news@src.test" in lines
    assert b"To: ann@sink.test, bob@sink.test" in lines
    assert b"Subject: Spring offers" in lines
    assert b"Date: Fri, 15 Jan 2027 08:00:00 +0000" in lines
    assert f"Message-ID: {answer.body['message_id']}".encode() in lines
    assert answer.body["message_id"].endswith(f"@{HOSTNAME}>")
    assert b"Content-Type: text/plain; charset=utf-8" in lines
    assert b"Content-Transfer-Encoding: 7bit" in lines
    assert lines[0].startswith(b"Received: from 127.0.0.1 ([127.0.0.1])")
    assert b"with HTTP" in lines[0]
    assert stored.body.endswith(b"\r\n\r\nHello,\r\nour offers.\r\n")
    assert b"\n" not in stored.body.replace(b"\r\n", b"")
    # The daemon's hand-off ran once, after the store, marked as an API injection.
    assert [(m, e.source_type, s) for m, e, s in mgmt.received] == [
        (stored.msg_id, "api", len(stored.body))
    ]


def test_message_ids_are_unique(mgmt: MgmtHarness) -> None:
    ids = {mgmt.post(message()).body["message_id"] for _ in range(3)}
    assert len(ids) == 3


def test_given_to_date_and_message_id_replace_the_generated_ones(mgmt: MgmtHarness) -> None:
    headers = {"To": "Subscribers <list@src.test>", "Date": "Thu, 1 Jan 2026 00:00:00 +0000"}
    headers["Message-ID"] = "<mine@src.test>"
    answer = mgmt.post(message(headers=headers))
    assert answer.status == 202
    assert "message_id" not in answer.body
    (stored,) = mgmt.stored()
    names = header_names(stored.body)
    assert names.count("to") == names.count("date") == names.count("message-id") == 1
    assert b"To: Subscribers <list@src.test>" in header_block(stored.body)


def test_non_ascii_subject_name_and_text_are_encoded(mgmt: MgmtHarness) -> None:
    text = "Grüße\n" + "x" * 1200 + "\n.\n"
    doc = message(subject="Grüße aus Köln", from_name='Köln "Shop"', text=text)
    doc["headers"] = {"X-Note": "für alle"}
    answer = mgmt.post(doc)
    assert answer.status == 202, answer.raw
    (stored,) = mgmt.stored()
    assert stored.body.isascii()
    assert not stored.envelope.body_8bit
    assert all(len(line) <= 998 for line in stored.body.split(b"\r\n"))
    parsed = email.message_from_bytes(stored.body, policy=email.policy.default)
    assert str(parsed["Subject"]) == "Grüße aus Köln"
    assert str(parsed["X-Note"]) == "für alle"
    assert parsed["From"].addresses[0].display_name == 'Köln "Shop"'
    assert parsed["From"].addresses[0].addr_spec == "news@src.test"
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content().replace("\r\n", "\n") == text


def test_quoted_display_name(mgmt: MgmtHarness) -> None:
    assert mgmt.post(message(from_name='A "B" \\ C')).status == 202
    parsed = email.message_from_bytes(mgmt.stored()[0].body, policy=email.policy.default)
    assert parsed["From"].addresses[0].display_name == 'A "B" \\ C'


def test_utf8_addresses_set_smtputf8(mgmt: MgmtHarness) -> None:
    answer = mgmt.post(message(to=["jürgen@sink.test"]))
    assert answer.status == 202, answer.raw
    (stored,) = mgmt.stored()
    assert stored.envelope.smtputf8
    assert "To: jürgen@sink.test".encode() in header_block(stored.body)


def test_raw_message_is_normalised_to_crlf(mgmt: MgmtHarness) -> None:
    content = "From: a@src.test\nSubject: raw\n\nline 1\r\nline 2"
    answer = mgmt.post({"mail_from": "", "rcpt_to": ["x@sink.test"], "content": content})
    assert answer.status == 202, answer.raw
    assert answer.body == {"id": answer.body["id"], "recipients": 1}
    (stored,) = mgmt.stored()
    assert stored.envelope.sender == ""
    assert stored.body.endswith(b"From: a@src.test\r\nSubject: raw\r\n\r\nline 1\r\nline 2\r\n")
    assert header_names(stored.body) == ["received", "from", "subject"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("Subject: a\r\rb\r\n\r\nx", "CR"),
        ("Subject: a\r\n\r\nx\ry", "CR"),
        ("Subject: a\r\n\r\nx\x00y", "NUL"),
        ("", "empty"),
        ("Subject: a\r\n\r\n" + "x" * 999, "998"),
    ],
    ids=["cr-header", "cr-body", "nul", "empty", "long-line"],
)
def test_raw_content_refusals(mgmt: MgmtHarness, content: str, error: str) -> None:
    answer = mgmt.post({"mail_from": "a@src.test", "rcpt_to": ["x@sink.test"], "content": content})
    assert answer.status == 400
    assert answer.body["field"] == "content"
    assert error in answer.body["error"]
    assert mgmt.stored() == []


def test_raw_long_lines_accepted_when_policy_says_so(
    mgmt_factory: Callable[..., MgmtHarness],
) -> None:
    policy = SourcePolicy(always_allow_relaying=True, long_lines=LongLinePolicy.ACCEPT)
    mgmt = mgmt_factory(policies=SourcePolicyMap([("127.0.0.1", policy)]))
    doc = {
        "mail_from": "a@src.test",
        "rcpt_to": ["x@sink.test"],
        "content": "S: a\n\n" + "x" * 2000,
    }
    assert mgmt.post(doc).status == 202
    assert mgmt.stored()[0].envelope.tags == (("long-lines", "yes"),)


def test_routing_parameters_reach_the_envelope(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    mgmt = mgmt_factory(known_vmtas=frozenset({"pool-a"}))
    answer = mgmt.post(message(virtual_mta="Pool-A", job_id="campaign 42", env_id="ENV-1"))
    assert answer.status == 202, answer.raw
    (stored,) = mgmt.stored()
    env = stored.envelope
    assert (env.vmta, env.job_id, env.env_id) == ("pool-a", "campaign 42", "ENV-1")
    names = header_names(stored.body)
    assert "x-virtual-mta" not in names
    assert "x-job" not in names
    raw = {"mail_from": "a@src.test", "rcpt_to": ["x@sink.test"], "content": "S: a\n\nb"}
    assert mgmt.post({**raw, "virtual_mta": "pool-a", "job_id": "j"}).status == 202
    env = mgmt.stored()[1].envelope
    assert (env.vmta, env.job_id) == ("pool-a", "j")


def test_job_id_uses_the_sources_job_header(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    custom = SourcePolicy(always_allow_relaying=True, jobid_header="X-Mailing")
    odd = SourcePolicy(always_allow_relaying=True, jobid_header="Message-ID")
    policies = SourcePolicyMap([("127.0.0.1", custom), ("127.0.0.66", odd)])
    from sluice.mgmt import AccessRule, Role

    admin = AccessRule(network=__import__("ipaddress").ip_network("127.0.0.66/32"), role=Role.ADMIN)
    mgmt = mgmt_factory(policies=policies, access=[admin])
    assert mgmt.post(message(job_id="J1")).status == 202
    assert mgmt.post(message(job_id="J2"), source="127.0.0.66").status == 202
    first, second = mgmt.stored()
    assert (first.envelope.job_id, second.envelope.job_id) == ("J1", "J2")
    assert "x-mailing" not in header_names(first.body)
    assert "x-job" not in header_names(second.body)
    assert header_names(second.body).count("message-id") == 1


def test_unknown_virtual_mta_is_422(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    mgmt = mgmt_factory(known_vmtas=frozenset({"pool-a"}))
    answer = mgmt.post(message(virtual_mta="nope"))
    assert answer.status == 422
    assert answer.body["field"] == "virtual_mta"
    assert "nope" in answer.body["error"]
    assert mgmt.stored() == []
    assert mgmt.received == []


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (message(to=[]), "to"),
        (message(to="ann@sink.test"), "to"),
        (message(to=["ann"]), "to[0]"),
        (message(to=["ann@sink.test", "<bob@sink.test>"]), "to[1]"),
        (message(to=["@relay.test:bob@sink.test"]), "to[0]"),
        (message(to=["a b@sink.test"]), "to[0]"),
        (message(to=[5]), "to[0]"),
        (message(**{"from": ""}), "from"),
        (message(**{"from": "x" * 65 + "@src.test"}), "from"),
        (message(subject=None), "subject"),
        (message(text=7), "text"),
        (message(text="a\x00b"), "text"),
        (message(text="a\rb"), "text"),
        (message(headers=["X-A", "b"]), "headers"),
        (message(virtual_mta="a b"), "virtual_mta"),
        (message(job_id=" padded"), "job_id"),
        (message(job_id="j" * 256), "job_id"),
        (message(env_id="has space"), "env_id"),
        (message(env_id="e" * 101), "env_id"),
        (message(subject="\ud800"), "subject"),
        (message(bcc=["x@sink.test"]), "bcc"),
        (message(content="x"), "from"),
        (
            {"mail_from": "a@src.test", "rcpt_to": ["x@sink.test"], "content": "x", "text": "y"},
            "text",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_field_refusals_name_the_field(mgmt: MgmtHarness, doc: dict[str, Any], field: str) -> None:
    answer = mgmt.post(doc)
    assert answer.status == 400, answer.raw
    assert answer.body["field"] == field
    assert mgmt.stored() == []


def test_too_many_recipients(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, max_rcpt_per_message=2)
    mgmt = mgmt_factory(policies=SourcePolicyMap([("127.0.0.1", policy)]))
    answer = mgmt.post(message(to=["a@sink.test", "b@sink.test", "c@sink.test"]))
    assert answer.status == 400
    assert answer.body["field"] == "to"
    assert "max-rcpt-per-message" in answer.body["error"]
    assert mgmt.post(message(to=["a@sink.test", "b@sink.test"])).status == 202


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"x"', "JSON object"),
        (b'{"subject": NaN}', "NaN"),
        (b'{"from": "a@src.test", "from": "b@src.test"}', "twice"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b"", "malformed JSON"),
    ],
    ids=["truncated", "array", "string", "nan", "duplicate-key", "not-utf8", "deep", "empty"],
)
def test_malformed_json_is_400(mgmt: MgmtHarness, raw: bytes, error: str) -> None:
    answer = mgmt.post(None, raw=raw)
    assert answer.status == 400
    assert error in answer.body["error"]
    assert mgmt.stored() == []


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_content_type_must_be_json(mgmt: MgmtHarness, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    body = b'{"from": "a@src.test"}'
    answer = mgmt.request("POST", "/api/v1/messages", body, headers=headers)
    assert answer.status == 415
    assert answer.body["field"] == "Content-Type"


def test_json_with_charset_is_accepted(mgmt: MgmtHarness) -> None:
    answer = mgmt.post(message(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.status == 202


def test_message_over_max_message_size_is_413(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, max_message_size=2000)
    mgmt = mgmt_factory(policies=SourcePolicyMap([("127.0.0.1", policy)]))
    answer = mgmt.post(message(text="x" * 3000))
    assert answer.status == 413
    assert answer.body["field"] == "text"
    assert "552" in answer.body["error"]
    raw = {
        "mail_from": "a@src.test",
        "rcpt_to": ["x@sink.test"],
        "content": "S: a\n\n" + "y" * 3000,
    }
    assert mgmt.post(raw).body["field"] == "content"
    assert mgmt.stored() == []
    assert mgmt.post(message(text="x" * 500)).status == 202


def test_request_over_max_request_size_is_413(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    mgmt = mgmt_factory(max_request_size=4096)
    answer = mgmt.post(message(text="x" * 5000))
    assert answer.status == 413
    assert answer.headers["Content-Type"].startswith("application/json")
    assert mgmt.stored() == []


def test_full_spool_is_503_with_retry_after(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    disk = MemoryDisk()
    mgmt = mgmt_factory(spool=MemorySpool(disk))
    disk.full = True
    answer = mgmt.post(message())
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "60"
    assert "4.3.1" in answer.body["error"]
    assert mgmt.received == []
    disk.full = False
    assert mgmt.post(message()).status == 202


def test_busy_is_503(mgmt: MgmtHarness) -> None:
    mgmt.server.busy = (451, "4.3.2", "System busy, try again later")
    answer = mgmt.post(message())
    assert answer.status == 503
    assert "4.3.2" in answer.body["error"]
    assert answer.headers["Retry-After"] == "60"
    mgmt.server.busy = None
    assert mgmt.post(message()).status == 202


def test_a_failing_hand_off_does_not_change_the_answer(mgmt: MgmtHarness) -> None:
    def broken(msg_id: int, env: object, size: int) -> None:
        raise RuntimeError("scheduler bug")

    mgmt.server.services.on_received = broken
    answer = mgmt.post(message())
    assert answer.status == 202
    assert len(mgmt.stored()) == 1


def test_202_means_durable_across_a_reopen(mgmt: MgmtHarness, tmp_path: Path) -> None:
    ids = [mgmt.post(message(subject=f"m{k}")).body["id"] for k in range(3)]
    mgmt.stop()

    async def reopen() -> list[str]:
        spool = await SqliteSpool.open(str(mgmt.workdir / "spool"))
        try:
            return [str(m.msg_id) for m in spool.recover()]
        finally:
            await spool.close()

    assert asyncio.run(reopen()) == ids


def test_concurrent_injections_each_stored_once(mgmt: MgmtHarness) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda k: mgmt.post(message(subject=f"c{k}")), range(40)))
    assert {a.status for a in answers} == {202}
    stored = mgmt.stored()
    assert sorted(str(s.msg_id) for s in stored) == sorted(a.body["id"] for a in answers)
    subjects = sorted(email.message_from_bytes(s.body)["Subject"] for s in stored)
    assert subjects == sorted(f"c{k}" for k in range(40))


def test_trickled_body_times_out_with_408(
    mgmt: MgmtHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import sluice.mgmt._inject as inject_module

    monkeypatch.setattr(inject_module, "BODY_TIMEOUT_SECONDS", 0.3)
    with socket.create_connection((mgmt.host, mgmt.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/messages HTTP/1.1\r\n"
            + f"Host: {mgmt.host}:{mgmt.port}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"from"'
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert b'"field": null' in reply
    assert mgmt.stored() == []
