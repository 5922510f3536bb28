"""The listener end to end on loopback: smtplib and raw sockets (test-plan A5, A7, A8, T10-T13)."""

from __future__ import annotations

import pathlib
import smtplib
import socket
import time
from collections.abc import Callable

import pytest
from intake_harness import TRUSTED_ALL, Harness, read_reply, read_until_closed

from sluice.errors import SpoolFullError, SpoolUnavailableError
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.message import Envelope, MessageId, Notify
from sluice.smtp import LongLinePolicy
from sluice.spool import MemoryDisk, MemorySpool, SqliteSpool

MSG = b"From: a@x.test\r\nSubject: t\r\n\r\nhello\r\n"


def test_smtplib_happy_path_envelope_and_headers(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(
        always_allow_relaying=True,
        process_x_virtual_mta=True,
        process_x_job=True,
        process_x_envid=True,
        add_message_id_header=True,
        add_date_header=True,
    )
    h = harness_factory(
        policies=SourcePolicyMap([("127.0.0.1", policy)]),
        known_vmtas=frozenset({"vmta1", "pool1"}),
    )
    body = (
        b"From: a@x.test\r\nX-Virtual-MTA: VMTA1\r\nX-Job: j-1\r\nX-Envid: hdr-env\r\n"
        b"Subject: hi\r\n\r\nline\r\n"
    )
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        s.ehlo("client.test")
        s.mail("a@x.test", ["RET=HDRS", "ENVID=env+2B1", "BODY=8BITMIME"])
        code, _ = s.rcpt("b@y.test", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b+40y.test"])
        assert code == 250
        assert s.rcpt("c@z.test")[0] == 250
        code, text = s.data(body)
        assert code == 250
        assert text.startswith(b"2.0.0 Ok: queued as ")
    [(env, data)] = h.messages()
    assert env.sender == "a@x.test"
    assert [r.address for r in env.recipients] == ["b@y.test", "c@z.test"]
    assert env.recipients[0].notify == Notify.SUCCESS | Notify.FAILURE
    assert env.recipients[0].orcpt == "rfc822;b@y.test"
    assert env.recipients[1].notify == Notify.NONE
    assert (env.vmta, env.job_id, env.env_id, env.ret) == ("vmta1", "j-1", "env+1", "HDRS")
    assert (env.source_ip, env.source_helo, env.body_8bit) == ("127.0.0.1", "client.test", True)
    assert env.arrival > 1e9
    assert data.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mta.test with ESMTP")
    assert b"X-Virtual-MTA" not in data
    assert b"X-Job" not in data
    assert b"X-Envid" not in data
    assert b"\r\nMessage-ID: <0.1@mta.test>\r\n" in data
    assert b"\r\nDate: " in data
    assert data.endswith(b"\r\n\r\nline\r\n")
    # Hand-off (queue per domain/vmta) and the accounting hook, after the 250.
    assert h.queues.queues == {"y.test/vmta1": [(1, 0)], "z.test/vmta1": [(1, 1)]}
    assert [(mid, size) for mid, _, size in h.received] == [(1, len(data))]


def test_default_vmta_and_pipelined_quit_after_dot(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, default_virtual_mta="pool1")
    h = harness_factory(policies=SourcePolicyMap([("0/0", policy)]))
    sock = h.connect()
    assert read_reply(sock).startswith(b"220 ")
    sock.sendall(b"EHLO c.test\r\n")
    assert b"PIPELINING" in read_reply(sock)
    sock.sendall(b"MAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    replies = b""
    while replies.count(b"\r\n") < 3:
        replies += sock.recv(4096)
    assert replies.split(b"\r\n")[2].startswith(b"354")
    # The message, its dot and QUIT in one write: the 250 must come before the 221.
    sock.sendall(MSG + b".\r\nQUIT\r\n")
    rest = read_until_closed(sock)
    assert rest.startswith(b"250 2.0.0 Ok: queued as 1\r\n221 2.0.0")
    [(env, _)] = h.messages()
    assert env.vmta == "pool1"
    assert env.sender == ""
    assert h.queues.queues == {"y.test/pool1": [(1, 0)]}


def test_unknown_virtual_mta_is_refused(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, process_x_virtual_mta=True)
    h = harness_factory(
        policies=SourcePolicyMap([("127.0.0.1", policy)]), known_vmtas=frozenset({"vmta1"})
    )
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@x.test", ["b@y.test"], b"X-Virtual-MTA: nowhere\r\n\r\nx\r\n")
        assert err.value.smtp_code == 550
        assert b"5.7.1 Unknown virtual MTA or pool 'nowhere'" in err.value.smtp_error
        # The session goes on: a good one is accepted.
        s.sendmail("a@x.test", ["b@y.test"], b"X-Virtual-MTA: vmta1\r\n\r\nx\r\n")
    [(env, _)] = h.messages()
    assert env.vmta == "vmta1"


def test_spool_full_gives_452_and_acknowledges_nothing(
    harness_factory: Callable[..., Harness],
) -> None:
    disk = MemoryDisk(full=True)
    h = harness_factory(spool=MemorySpool(disk))
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@x.test", ["b@y.test"], MSG)
        assert (err.value.smtp_code, err.value.smtp_error[:5]) == (452, b"4.3.1")
        assert h.messages() == []
        assert h.queues.count() == 0
        h.call(lambda: setattr(disk, "full", False))
        s.sendmail("a@x.test", ["b@y.test"], MSG)  # injection resumes by itself
    assert len(h.messages()) == 1


def test_real_spool_full_gives_452(
    harness_factory: Callable[..., Harness], tmp_path: pathlib.Path
) -> None:
    h = harness_factory(spool_open=lambda: SqliteSpool.open(str(tmp_path), max_bytes=200_000))
    big = b"Subject: fill\r\n\r\n" + (b"y" * 998 + b"\r\n") * 40
    codes = []
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        s.ehlo()
        for _ in range(20):
            s.mail("a@x.test")
            s.rcpt("b@y.test")
            code, text = s.data(big)
            codes.append((code, text[:5]))
    assert (452, b"4.3.1") in codes
    assert {code for code, _ in codes} <= {250, 452}
    acked = sum(1 for code, _ in codes if code == 250)
    assert acked >= 1
    # Every acknowledged message is in the store, nothing else is.
    assert h.call(lambda: sum(1 for _ in h.spool.recover())) == acked
    assert h.queues.count() == acked


class _BrokenSpool(MemorySpool):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "code", "enhanced"),
    [
        (SpoolUnavailableError("disk on fire"), 451, b"4.3.0"),
        (SpoolFullError("full"), 452, b"4.3.1"),
        (RuntimeError("a bug in the store"), 451, b"4.3.0"),
    ],
)
def test_store_errors_map_to_4xx(
    harness_factory: Callable[..., Harness], exc: Exception, code: int, enhanced: bytes
) -> None:
    h = harness_factory(spool=_BrokenSpool(exc))
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@x.test", ["b@y.test"], MSG)
        assert (err.value.smtp_code, err.value.smtp_error[:5]) == (code, enhanced)
        assert s.noop()[0] == 250
    assert h.queues.count() == 0


def test_recipient_limit_and_command_order(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, max_rcpt_per_message=3)
    h = harness_factory(policies=SourcePolicyMap([("127.0.0.1", policy)]))
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        s.ehlo()
        code, text = s.docmd("RCPT", "TO:<b@y.test>")
        assert (code, text[:5]) == (503, b"5.5.1")
        code, text = s.docmd("DATA")
        assert code == 503
        s.mail("a@x.test")
        code, text = s.docmd("DATA")
        assert (code, text[:5]) == (503, b"5.5.1")
        codes = [s.rcpt(f"r{i}@y.test")[0] for i in range(4)]
        assert codes == [250, 250, 250, 452]
        assert s.rcpt("r4@y.test")[1][:5] == b"4.5.3"
        assert s.data(MSG)[0] == 250
    [(env, _)] = h.messages()
    assert [r.address for r in env.recipients] == ["r0@y.test", "r1@y.test", "r2@y.test"]


def test_size_limit_at_mail_and_after_dot(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, max_message_size=1000)
    h = harness_factory(policies=SourcePolicyMap([("127.0.0.1", policy)]))
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        s.ehlo()
        assert s.esmtp_features["size"] == "1000"
        code, text = s.docmd("MAIL", "FROM:<a@x.test> SIZE=1001")
        assert (code, text[:5]) == (552, b"5.3.4")
        s.mail("a@x.test")
        s.rcpt("b@y.test")
        code, text = s.data(
            b"Subject: big\r\n\r\n" + b"x" * 80 + b"\r\n" * 20 + b"y" * 990 + b"\r\n"
        )
        assert (code, text[:5]) == (552, b"5.3.4")
    assert h.messages() == []


def test_t10_line_and_path_limits(harness: Harness) -> None:
    sock = harness.connect()
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    sock.sendall(b"NOOP " + b"x" * 506 + b"\r\n")  # 513 octets with CRLF
    assert read_reply(sock).startswith(b"500 5.5.2")
    sock.sendall(b"MAIL FROM:<a@x.test>\r\n")
    assert read_reply(sock).startswith(b"250")
    path = "v" * 60 + "@" + ".".join(["d" * 40] * 6) + ".test"  # > 256 octets
    sock.sendall(f"RCPT TO:<{path}>\r\n".encode())
    assert read_reply(sock).startswith(b"501 5.1.3")
    sock.sendall(b"RCPT TO:<" + b"v" * 65 + b"@y.test>\r\n")
    reply = read_reply(sock)
    assert reply[:1] == b"5"
    assert reply[4:9] == b"5.1.3"
    sock.sendall(b"QUIT\r\n")
    assert read_reply(sock).startswith(b"221")
    sock.close()


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_t10_flood_without_crlf_closes_with_bounded_memory(harness: Harness) -> None:
    sock = harness.connect(timeout=10)
    read_reply(sock)
    before = _rss_kib()
    start = time.monotonic()
    sent = 0
    chunk = b"A" * 65536
    try:
        while sent < 10 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got = read_until_closed(sock)
    assert time.monotonic() - start < 5
    assert got.startswith(b"500 5.5.2")
    assert _rss_kib() - before < 50 * 1024
    assert harness.messages() == []


def test_t10_long_body_line_rejected_by_default_accepted_and_tagged_on_request(
    harness_factory: Callable[..., Harness],
) -> None:
    long_body = b"Subject: l\r\n\r\n" + b"x" * 5000 + b"\r\n"
    h = harness_factory()
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@x.test", ["b@y.test"], long_body)
        assert (err.value.smtp_code, err.value.smtp_error[:5]) == (554, b"5.6.0")
    assert h.messages() == []
    accept = SourcePolicy(always_allow_relaying=True, long_lines=LongLinePolicy.ACCEPT)
    h2 = harness_factory(policies=SourcePolicyMap([("0/0", accept)]))
    with smtplib.SMTP("127.0.0.1", h2.port) as s:
        s.sendmail("a@x.test", ["b@y.test"], long_body)
    [(env, data)] = h2.messages()
    assert ("long-lines", "yes") in env.tags
    assert data.endswith(b"x" * 5000 + b"\r\n")


def test_t13_body_before_354_never_becomes_a_message(harness: Harness) -> None:
    sock = harness.connect()
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" + MSG + b".\r\n")
    got = read_until_closed(sock)
    assert b"554 5.5.0" in got
    assert b"queued" not in got
    assert harness.messages() == []


def test_t13_data_without_valid_rcpt_pipelined(harness: Harness) -> None:
    sock = harness.connect()
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<bad address>\r\nDATA\r\n" + MSG + b".\r\n")
    sock.sendall(b"QUIT\r\n")
    got = read_until_closed(sock)
    lines = got.split(b"\r\n")[:-1]
    # One reply per line: MAIL 250, RCPT 501, DATA 503; the would-be content lines are
    # commands now and get 500 (or the session is closed with 554 5.5.0); QUIT 221.
    assert lines[1].startswith(b"501")
    assert lines[2].startswith(b"503")
    assert not any(line.startswith((b"354", b"250 2.0.0")) for line in lines)
    assert harness.messages() == []


def test_t13_ten_thousand_rcpts_in_one_write_one_reply_each(harness: Harness) -> None:
    sock = harness.connect(timeout=30)
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    n = 10_000
    batch = b"MAIL FROM:<a@x.test>\r\n" + b"".join(
        b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(n)
    )
    sock.sendall(batch)
    got = b""
    while got.count(b"\r\n") < n + 1:
        chunk = sock.recv(1 << 20)
        assert chunk
        got += chunk
    lines = got.split(b"\r\n")[:-1]
    assert len(lines) == n + 1
    assert lines[0].startswith(b"250")
    assert sum(1 for line in lines[1:] if line.startswith(b"250 ")) == 1000  # default limit
    assert sum(1 for line in lines[1:] if line.startswith(b"452 4.5.3")) == n - 1000
    sock.sendall(b"DATA\r\n")
    assert read_reply(sock).startswith(b"354")
    sock.sendall(MSG + b".\r\nQUIT\r\n")
    assert read_until_closed(sock).startswith(b"250 2.0.0 Ok: queued")
    [(env, _)] = harness.messages()
    assert len(env.recipients) == 1000


def test_smtp_service_no_refuses_at_banner(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(policies=SourcePolicyMap([("0/0", SourcePolicy(smtp_service=False))]))
    sock = h.connect()
    assert read_until_closed(sock).startswith(b"554 5.7.1")


def test_trusted_policy_fixture_is_a_relay_policy() -> None:
    assert TRUSTED_ALL.always_allow_relaying


def test_half_closed_client_still_gets_its_replies(harness: Harness) -> None:
    sock = harness.connect()
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    got = b""
    while got.count(b"\r\n") < 3:
        got += sock.recv(4096)
    sock.sendall(MSG + b".\r\nQUIT\r\n")
    sock.shutdown(socket.SHUT_WR)
    rest = read_until_closed(sock)
    assert rest.startswith(b"250 2.0.0 Ok: queued as 1\r\n221 ")
    assert len(harness.messages()) == 1
