"""Header edits: routing headers read and stripped, Received/Message-ID/Date added."""

from __future__ import annotations

import random

from sluice.intake.headers import (
    HeaderEdit,
    edit_headers,
    edit_message,
    received_field,
    rfc5322_date,
)
from sluice.intake.policy import SourcePolicy

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC

MSG = (
    b"From: a@x.test\r\n"
    b"X-Virtual-MTA: VMTA1 \r\n"
    b"Subject: hello\r\n"
    b"  folded\r\n"
    b"X-Job: job-42\r\n"
    b"X-Envid: env-7\r\n"
    b"\r\n"
    b"X-Virtual-MTA: not-a-header-this-is-body\r\n"
    b"body\r\n"
)

ALL_ON = SourcePolicy(process_x_virtual_mta=True, process_x_job=True, process_x_envid=True)


def full(edit: HeaderEdit) -> bytes:
    return edit.header + bytes(edit.body)


def test_date_format() -> None:
    assert rfc5322_date(NOW) == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert rfc5322_date(NOW + 0.5) == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert rfc5322_date(0) == "Thu, 01 Jan 1970 00:00:00 +0000"


def test_reads_and_strips_routing_headers() -> None:
    edit = edit_headers(MSG, policy=ALL_ON, received=None, now=NOW)
    assert (edit.vmta, edit.job_id, edit.env_id) == ("vmta1", "job-42", "env-7")
    assert edit.header == b"From: a@x.test\r\nSubject: hello\r\n  folded\r\n\r\n"
    assert bytes(edit.body) == b"X-Virtual-MTA: not-a-header-this-is-body\r\nbody\r\n"
    assert edit.body.obj is MSG  # a view of the input, not a copy
    assert edit.size() == len(full(edit))


def test_retain_keeps_headers_but_still_reads_them() -> None:
    policy = SourcePolicy(
        process_x_virtual_mta=True,
        process_x_job=True,
        retain_x_virtual_mta=True,
        retain_x_job=True,
    )
    edit = edit_headers(MSG, policy=policy, received=None, now=NOW)
    assert (edit.vmta, edit.job_id, edit.env_id) == ("vmta1", "job-42", None)
    assert full(edit) == MSG  # X-Envid not processed: left alone


def test_processing_off_leaves_message_alone() -> None:
    edit = edit_headers(MSG, policy=SourcePolicy(), received=None, now=NOW)
    assert (edit.vmta, edit.job_id, edit.env_id) == (None, None, None)
    assert full(edit) == MSG


def test_custom_jobid_header_not_x_is_kept() -> None:
    msg = b"Message-ID: <m1@x.test>\r\nX-Job: other\r\n\r\nb\r\n"
    policy = SourcePolicy(process_x_job=True, jobid_header="Message-ID")
    edit = edit_headers(msg, policy=policy, received=None, now=NOW)
    assert edit.job_id == "<m1@x.test>"
    assert full(edit) == msg


def test_received_message_id_and_date_added() -> None:
    policy = SourcePolicy(add_message_id_header=True, add_date_header=True)
    rec = received_field(
        hostname="mta.test",
        helo="client.test",
        client_ip="127.0.0.1",
        protocol="ESMTP",
        now=NOW,
        hide_source=False,
        recipient="b@y.test",
    )
    edit = edit_headers(
        b"Subject: s\r\n\r\nbody\r\n",
        policy=policy,
        received=rec,
        now=NOW,
        message_id="<1.2@mta.test>",
    )
    assert edit.header == (
        b"Received: from client.test ([127.0.0.1])\r\n\tby mta.test with ESMTP\r\n"
        b"\tfor <b@y.test>; Fri, 15 Jan 2027 08:00:00 +0000\r\n"
        b"Subject: s\r\n"
        b"Message-ID: <1.2@mta.test>\r\n"
        b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n"
        b"\r\n"
    )


def test_existing_message_id_and_date_kept() -> None:
    policy = SourcePolicy(add_message_id_header=True, add_date_header=True)
    msg = b"date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMESSAGE-ID: <a@b>\r\n\r\nx\r\n"
    edit = edit_headers(msg, policy=policy, received=None, now=NOW, message_id="<n@m>")
    assert full(edit) == msg


def test_hide_message_source_and_sanitised_helo() -> None:
    rec = received_field(
        hostname="mta.test",
        helo="evil\r\nX-Injected: 1",
        client_ip="10.0.0.1",
        protocol="SMTP",
        now=NOW,
        hide_source=True,
    )
    assert b"10.0.0.1" not in rec
    assert b"evil" not in rec
    rec2 = received_field(
        hostname="mta.test",
        helo="evil\r\nX-Injected: 1",
        client_ip="10.0.0.1",
        protocol="SMTP",
        now=NOW,
        hide_source=False,
    )
    assert rec2.count(b"\r\n") == 2  # the folds we put there, and the final CRLF
    assert b"evilX-Injected:1" in rec2


def test_message_without_blank_line_gets_one() -> None:
    policy = SourcePolicy()
    edit = edit_headers(
        b"Subject: s\r\nthis is not a header\r\n",
        policy=policy,
        received=b"Received: x\r\n",
        now=NOW,
    )
    assert full(edit) == b"Received: x\r\nSubject: s\r\n\r\nthis is not a header\r\n"
    edit = edit_headers(b"just body\r\n", policy=policy, received=None, now=NOW)
    assert full(edit) == b"\r\njust body\r\n"
    edit = edit_headers(b" leading fold\r\n", policy=policy, received=None, now=NOW)
    assert full(edit) == b"\r\n leading fold\r\n"


def test_headers_only_and_empty_message() -> None:
    policy = SourcePolicy(process_x_job=True)
    edit = edit_headers(b"Subject: s\r\nX-Job: j", policy=policy, received=None, now=NOW)
    assert edit.job_id == "j"
    assert full(edit) == b"Subject: s\r\n\r\n"
    edit = edit_headers(b"Subject: s", policy=policy, received=None, now=NOW)
    assert full(edit) == b"Subject: s\r\n\r\n"
    edit = edit_headers(b"", policy=policy, received=None, now=NOW)
    assert full(edit) == b"\r\n"


def test_first_header_wins_and_all_copies_stripped() -> None:
    msg = b"X-Virtual-MTA: a\r\nX-Virtual-MTA: b\r\n\r\n"
    edit = edit_headers(msg, policy=ALL_ON, received=None, now=NOW)
    assert edit.vmta == "a"
    assert edit.header == b"\r\n"


def test_pass_through_matches_the_line_scan_on_random_messages() -> None:
    # Nothing to read or add takes a one-pass path; it must cut the message exactly where
    # the line-by-line scan does (X-Envid processing forces the scan and, with no X-Envid
    # field present, changes nothing else).
    rng = random.Random(5321)
    pieces = [b"From: a", b"Subject:", b"x", b" ", b"\t", b":", b"\r\n", b"\r", b"\n", b"\r\n\r\n"]
    scan = SourcePolicy(process_x_envid=True)
    for _ in range(3000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for received in (None, b"Received: by mta.test; now\r\n"):
            fast = edit_headers(message, policy=SourcePolicy(), received=received, now=NOW)
            slow = edit_headers(message, policy=scan, received=received, now=NOW)
            assert (fast.header, bytes(fast.body)) == (slow.header, bytes(slow.body)), message


def test_edit_message_is_edit_headers_joined() -> None:
    # edit_message skips the HeaderEdit when the message only gains a Received field; the
    # bytes and values must be those of edit_headers for every message and policy.
    rng = random.Random(3461)
    pieces = [
        b"From: a",
        b"X-Virtual-MTA: v1",
        b"X-Job: j",
        b"Subject:",
        b"x",
        b" ",
        b":",
        b"\r\n",
        b"\r",
        b"\n",
        b"\r\n\r\n",
    ]
    policies = [SourcePolicy(), ALL_ON, SourcePolicy(add_date_header=True)]
    for _ in range(3000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for policy in policies:
            for received in (None, b"Received: by mta.test; now\r\n"):
                edit = edit_headers(message, policy=policy, received=received, now=NOW)
                want = (full(edit), edit.vmta, edit.job_id, edit.env_id)
                got = edit_message(message, policy=policy, received=received, now=NOW)
                assert got == want, message
    assert edit_message(MSG, policy=SourcePolicy(), received=b"R\r\n", now=NOW)[0] == (
        b"R\r\n" + MSG
    )


def test_received_field_remembered_parts_follow_each_call() -> None:
    first = received_field(
        hostname="mta.test",
        helo="client.test",
        client_ip="192.0.2.1",
        protocol="ESMTP",
        now=NOW,
        hide_source=False,
        recipient="a@x.test",
    )
    again = received_field(
        hostname="mta.test",
        helo="client.test",
        client_ip="192.0.2.1",
        protocol="ESMTP",
        now=NOW + 61,
        hide_source=False,
        recipient=None,
    )
    assert first == (
        b"Received: from client.test ([192.0.2.1])\r\n\tby mta.test with ESMTP\r\n"
        b"\tfor <a@x.test>; Fri, 15 Jan 2027 08:00:00 +0000\r\n"
    )
    assert again == (
        b"Received: from client.test ([192.0.2.1])\r\n\tby mta.test with ESMTP; "
        b"Fri, 15 Jan 2027 08:01:01 +0000\r\n"
    )
