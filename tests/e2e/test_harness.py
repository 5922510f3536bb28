"""Tests of the end-to-end harness itself: each helper proven on its own before Sluice uses it."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from tests.e2e.dnszones import RECEIVER_ADDRS, DnsTestServer
from tests.e2e.injectors import RawSmtpClient, inject
from tests.e2e.ledger import Delivery, Ledger, body_digest, make_body, parse_delivery
from tests.e2e.peers import (
    PeerError,
    SmtpSink,
    Tarpit,
    free_port_on_all,
    make_world_dir,
    parse_sink_dump,
)
from tests.e2e.postfix_peer import PostfixReceiver
from tests.e2e.sluice_proc import SluiceProcess, listener_from_config

OK = RECEIVER_ADDRS["ok"]

# ---------------------------------------------------------------------------------------------
# ledger (pure)
# ---------------------------------------------------------------------------------------------


def _deliver(msg_raw: bytes, rcpt: str, source: str = "synthetic") -> Delivery:
    return parse_delivery(msg_raw, [rcpt], source)[0]


def test_ledger_counts_lost_dup_truncated_phantom(capsys: pytest.CaptureFixture[str]) -> None:
    led = Ledger()
    msgs = [led.make([f"r{i}@ok.test"], size=600) for i in range(5)]
    for m in msgs[:4]:
        led.record_reply(m.seq, 250)
    led.record_reply(msgs[4].seq, 451)  # seq 5 never acknowledged

    stored = [m.data.replace(b"\r\n", b"\n") for m in msgs]  # receivers store LF
    cut = msgs[3].data[: len(msgs[3].data) - 50]
    deliveries = [
        _deliver(stored[0], "r0@ok.test"),  # seq 1: once
        _deliver(stored[1], "R1@OK.TEST"),  # seq 2: twice (case of the address ignored)
        _deliver(stored[1], "r1@ok.test"),
        # seq 3: missing → acked_lost
        _deliver(cut, "r3@ok.test"),  # seq 4: truncated body
        _deliver(stored[4], "r4@ok.test"),  # seq 5: delivered though never acked
        _deliver(stored[0], "someone@else.test"),  # seq 1 to a recipient it never had
        _deliver(b"X-Test-Seq: 999\n\nhi\n", "x@ok.test"),  # never injected
        _deliver(b"Subject: smuggled\n\nhi\n", "x@ok.test"),  # no seq at all
    ]
    report = led.check(deliveries)
    assert report.summary() in capsys.readouterr().out
    assert (report.injected, report.acked, report.delivered) == (5, 4, 8)
    assert report.acked_lost == 1
    assert report.lost_pairs == ((msgs[2].seq, "r2@ok.test"),)
    assert report.dup == 1
    assert report.dup_pairs == ((msgs[1].seq, "r1@ok.test"),)
    assert report.truncated == 1
    assert report.phantom == 3
    assert report.unacked_delivered == 1
    assert not report.ok

    # A bounce reported for the missing one accounts for it.
    again = led.check(deliveries, bounced=[(msgs[2].seq, "r2@ok.test")], echo=False)
    assert again.acked_lost == 0
    assert again.bounced == 1


def test_ledger_clean_run_is_ok_and_partial_recipient_acks() -> None:
    led = Ledger()
    m = led.make(["a@ok.test", "b@ok.test"])
    led.record_reply(m.seq, 250, ["a@ok.test"])  # b was refused at RCPT
    report = led.check([_deliver(m.data, "a@ok.test")], echo=False)
    assert report.ok
    assert (report.acked, report.acked_lost, report.dup, report.phantom) == (1, 0, 0, 0)
    assert led.acked_seqs() == [m.seq]
    assert led.unacked() == []


def test_ledger_file_records_each_reply(tmp_path: Path) -> None:
    led = Ledger(path=tmp_path / "ledger.csv")
    m = led.make(["a@ok.test"])
    led.record_reply(m.seq, 421)
    led.record_ack(m.seq)
    led.close()
    rows = [line.split(",") for line in (tmp_path / "ledger.csv").read_text().splitlines()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(m.seq, 421), (m.seq, 250)]
    with pytest.raises(ValueError, match="not made"):
        led.record_ack(12345)


def test_messages_carry_seq_headers_and_sized_bodies() -> None:
    led = Ledger()
    m = led.make(["a@ok.test"], size=20_000)
    head, _, body = m.data.partition(b"\r\n\r\n")
    assert f"Message-ID: <seq-{m.seq}@test>".encode() in head.split(b"\r\n")
    assert f"X-Test-Seq: {m.seq}".encode() in head.split(b"\r\n")
    assert 20_000 <= len(body) < 20_000 + 100
    assert b"\n." in body  # a dot line is always there, so dot-stuffing is exercised
    assert all(len(line) <= 998 for line in body.split(b"\r\n"))
    bare = body.replace(b"\r\n", b"")
    assert b"\r" not in bare
    assert b"\n" not in bare
    assert make_body(7, 500) == make_body(7, 500) != make_body(8, 500)
    assert body_digest(body) == body_digest(body.replace(b"\r\n", b"\n") + b"\n")
    assert body_digest(body) != body_digest(body[:-10])


def test_parse_sink_dump_splits_transactions() -> None:
    dump = (
        b"X-Sluice-Sink-Begin: 1\n"
        b"X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nX-Helo-Args: h.test\n"
        b"X-Mail-Args: <a@src.test> SIZE=10\n"
        b"X-Rcpt-Args: <r1@sink.test> NOTIFY=NEVER\nX-Rcpt-Args: <r2@sink.test>\n"
        b"Received: from h.test ([127.0.0.1])\n\tby smtp-sink (smtp-sink) with ESMTP id 1;\n"
        b"\tSat, 28 Nov 2026 00:00:00 +0000 (UTC)\n"
        b"X-Test-Seq: 1\n\nbody\n\n"
        b"X-Sluice-Sink-Begin: 1\n"
        b"X-Client-Addr: 127.0.0.1\nX-Client-Proto: SMTP\nX-Mail-Args: <>\n"
        b"X-Rcpt-Args: <r3@sink.test>\n"
        b"Received: from x\n\tby y\n\tdate\n"
        b"X-Test-Seq: 2\n\n.dot\n\n"
    )
    first, second = parse_sink_dump(dump)
    assert (first.sender, first.mail_args, first.helo) == ("a@src.test", "SIZE=10", "h.test")
    assert first.recipients == ("r1@sink.test", "r2@sink.test")
    assert first.rcpt_args == ("NOTIFY=NEVER", "")
    assert first.message == b"X-Test-Seq: 1\n\nbody\n"
    assert (second.sender, second.recipients, second.helo) == ("", ("r3@sink.test",), None)
    assert second.message == b"X-Test-Seq: 2\n\n.dot\n"


def test_sink_dump_is_read_incrementally(tmp_path: Path) -> None:
    sink = SmtpSink(tmp_path, host="127.0.0.3", port=1)  # never started: only its dump
    assert sink.dump_path is not None
    one = (
        b"X-Sluice-Sink-Begin: 1\nX-Client-Addr: 127.0.0.1\nX-Mail-Args: <a@b>\n"
        b"X-Rcpt-Args: <r@sink.test>\nReceived: a\n\tb\n\tc\nX-Test-Seq: %d\n\nbody\n\n"
    )
    sink.dump_path.write_bytes(one % 1 + (one % 2)[:60])  # the second is still being written
    assert [t.message for t in sink.transactions()] == [b"X-Test-Seq: 1\n\nbody\n"]
    with sink.dump_path.open("ab") as f:
        f.write((one % 2)[60:])
    assert [d.seq for d in sink.deliveries()] == [1, 2]


def test_free_port_on_all_is_bindable_everywhere() -> None:
    addrs = ["127.0.0.2", "127.0.0.3", "127.0.0.9"]
    port = free_port_on_all(addrs)
    socks = []
    try:
        for a in addrs:
            s = socket.socket()
            s.bind((a, port))
            socks.append(s)
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# Postfix receiver (one instance for the module: ~2 s to start)
# ---------------------------------------------------------------------------------------------

RCPT_ACCESS = {
    "tempfail@ok.test": "450 4.2.0 try again later",
    "nouser@ok.test": "550 5.1.1 no such user",
}


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixReceiver]:
    workdir = make_world_dir("sluice-e2e-postfix-")
    port = free_port_on_all([OK])
    receiver = PostfixReceiver(
        workdir,
        host=OK,
        port=port,
        domains=("ok.test", "nomx.test"),
        recipient_limit=10,
        message_size_limit=200_000,
        recipient_access=RCPT_ACCESS,
    )
    with receiver:
        yield receiver
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.interop
def test_postfix_delivers_ledger_messages_to_maildir(postfix: PostfixReceiver) -> None:
    led = Ledger()
    before = len(postfix.messages())
    msgs = [led.make(["alice@ok.test", "bob@nomx.test"], size=2000 + i * 700) for i in range(4)]
    result = inject(led, msgs, postfix.host, postfix.port, concurrency=2, per_connection=2)
    assert (result.acked, result.unacked, result.refused) == (4, 0, 0)

    found = postfix.wait_for_messages(before + 8)
    assert len(found) == before + 8
    mine = [d for d in postfix.deliveries() if d.seq in {m.seq for m in msgs}]
    assert sorted((d.seq, d.recipient) for d in mine) == sorted(
        (m.seq, r) for m in msgs for r in ("alice@ok.test", "bob@nomx.test")
    )
    assert {d.header("Message-ID") for d in mine} == {m.message_id for m in msgs}
    report = led.check(mine)
    assert report.ok
    assert (report.acked, report.delivered, report.dup) == (8, 8, 0)
    assert postfix.queue_count() == 0


@pytest.mark.interop
def test_postfix_rejects_bare_lf(postfix: PostfixReceiver) -> None:
    before = len(postfix.messages())
    with RawSmtpClient(postfix.host, postfix.port) as c:
        c.ehlo()
        # Control: a canonical CRLF message is taken.
        reply, _ = c.send_message("a@src.test", ["good@ok.test"], b"X-Test-Seq: 1\r\n\r\nok\r\n")
        assert reply.code == 250
        c.command("MAIL FROM:<a@src.test>", 250)
        c.command("RCPT TO:<victim@ok.test>", 250)
        c.command("DATA", 354)
        c.send_raw(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
        bad = c.read_reply()
    assert bad.code // 100 == 5, bad
    assert "bare <LF>" in bad.text
    found = postfix.wait_for_messages(before + 1)
    time.sleep(0.3)  # anything wrongly accepted would be in the Maildir by now
    rcpts = [m.recipient for m in postfix.messages()[before:]]
    assert len(found) == before + 1
    assert "victim@ok.test" not in rcpts


@pytest.mark.interop
def test_postfix_enforces_limits_and_recipient_replies(postfix: PostfixReceiver) -> None:
    with RawSmtpClient(postfix.host, postfix.port) as c:
        ehlo = c.ehlo()
        assert "SIZE 200000" in ehlo.lines
        assert "STARTTLS" not in ehlo.lines
        c.command("MAIL FROM:<a@src.test>", 250)
        assert c.command("RCPT TO:<tempfail@ok.test>").code == 450
        assert c.command("RCPT TO:<nouser@ok.test>").code == 550
        codes = [c.command(f"RCPT TO:<u{i}@ok.test>").code for i in range(11)]
        assert codes == [250] * 10 + [452]  # smtpd_recipient_limit = 10
        c.command("RSET", 250)
        assert c.command("MAIL FROM:<a@src.test> SIZE=200001").code == 552


@pytest.mark.interop
def test_postfix_tls_receiver_offers_starttls(
    postfix_factory: Callable[..., PostfixReceiver],
) -> None:
    receiver = postfix_factory(host="127.0.0.11", tls=True, hostname="mx.tls.test")
    with smtplib.SMTP(receiver.host, receiver.port, timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo()
        s.sendmail("a@src.test", ["t@ok.test"], b"X-Test-Seq: 1\r\n\r\ntls\r\n")
    assert [m.recipient for m in receiver.wait_for_messages(1)] == ["t@ok.test"]
    receiver.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((receiver.host, receiver.port), timeout=1).close()


# ---------------------------------------------------------------------------------------------
# smtp-sink
# ---------------------------------------------------------------------------------------------


@pytest.mark.interop
def test_smtp_sink_counts_and_dumps(smtp_sink: SmtpSink, ledger: Ledger) -> None:
    msgs = [ledger.make(["r1@sink.test", "r2@sink.test"], size=1500) for _ in range(3)]
    result = inject(ledger, msgs, smtp_sink.host, smtp_sink.port, client="raw", per_connection=3)
    assert result.acked == 3
    assert smtp_sink.wait_for_messages(3) == 3
    assert smtp_sink.message_count() == 3
    txns = smtp_sink.transactions()
    assert [t.sender for t in txns] == [ledger.sender] * 3
    assert all(t.recipients == ("r1@sink.test", "r2@sink.test") for t in txns)
    assert all(t.helo == "injector.test" and t.client == "127.0.0.1" for t in txns)
    report = ledger.check(smtp_sink.deliveries())
    assert report.ok
    assert (report.acked, report.delivered, report.dup, report.truncated) == (6, 6, 0, 0)


@pytest.mark.interop
def test_smtp_sink_faults_and_injector_outcomes(
    smtp_sink_factory: Callable[..., SmtpSink], ledger: Ledger
) -> None:
    refusing = smtp_sink_factory("127.0.0.7", hard_reject=(".",))
    deferring = smtp_sink_factory("127.0.0.5", soft_reject=(".",))
    dropping = smtp_sink_factory("127.0.0.4", hangup=(".",))
    greeting_421 = smtp_sink_factory("127.0.0.6", reply_421=("CONNECT",))

    m1, m2, m3, m4 = (ledger.make([f"x@{n}.test"]) for n in ("rej", "slow", "drop", "r421"))
    assert inject(ledger, [m1], refusing.host, refusing.port).refused == 1
    res = inject(
        ledger, [m2], deferring.host, deferring.port, retry=True, max_attempts=2, retry_delay=0.01
    )
    assert (res.unacked, res.attempts, res.errors) == (1, 2, 2)
    assert inject(ledger, [m3], dropping.host, dropping.port, client="raw").unacked == 1
    assert inject(ledger, [m4], greeting_421.host, greeting_421.port).unacked == 1
    assert [code for code, _ in ledger.replies(m1.seq)] == [500]
    assert [code for code, _ in ledger.replies(m2.seq)] == [450, 450]
    assert ledger.replies(m3.seq) == []

    assert refusing.wait_for_messages(1) == 1  # dumped, but the dot was refused ...
    assert refusing.deliveries() == []  # ... so it is not a delivery
    assert dropping.wait_for_messages(1) == 1
    held = dropping.deliveries()  # cut after the dot: the sink holds it (ambiguous)
    assert [(d.seq, d.recipient) for d in held] == [(m3.seq, "x@drop.test")]
    report = ledger.check([*refusing.deliveries(), *deferring.deliveries(), *held])
    assert (report.acked, report.acked_lost, report.unacked_delivered) == (0, 0, 1)
    assert report.ok


@pytest.mark.interop
def test_injector_retries_until_the_receiver_comes_up(
    smtp_sink_factory: Callable[..., SmtpSink], ledger: Ledger
) -> None:
    port = free_port_on_all(["127.0.0.3"])
    msgs = ledger.make_many(6, ["late@sink.test"], size=300)
    results = []
    worker = threading.Thread(
        target=lambda: results.append(
            inject(
                ledger,
                msgs,
                "127.0.0.3",
                port,
                concurrency=3,
                retry=True,
                retry_for=20,
                retry_delay=0.05,
            )
        )
    )
    worker.start()
    time.sleep(0.4)  # every injector is now failing to connect and retrying
    sink = smtp_sink_factory("127.0.0.3", port=port)
    worker.join(30)
    (result,) = results
    assert (result.acked, result.unacked) == (6, 0)
    assert result.errors > 0
    report = ledger.check(sink.deliveries())
    assert report.ok
    assert report.dup == 0


@pytest.mark.interop
def test_tarpit_never_greets() -> None:
    port = free_port_on_all(["127.0.0.8"])
    with Tarpit("127.0.0.8", port=port) as pit:
        with (
            socket.create_connection(("127.0.0.8", port), timeout=0.3) as s,
            pytest.raises(TimeoutError),
        ):
            s.recv(10)
        assert pit.accepted == 1


# ---------------------------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------------------------


def _query(server: DnsTestServer, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, server.address[0], port=server.address[1], timeout=2)


@pytest.mark.interop
def test_dns_fixture_serves_the_test_zones(dns_server: DnsTestServer) -> None:
    mx = _query(dns_server, "ok.test", "MX")
    assert mx.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in mx.answer[0]] == ["10 mx.ok.test."]
    a = _query(dns_server, "mx.ok.test", "A")
    assert [r.to_text() for r in a.answer[0]] == [OK]
    sink_a = _query(dns_server, "mx.sink.test", "A")
    assert [r.to_text() for r in sink_a.answer[0]] == [RECEIVER_ADDRS["sink"]]
    assert _query(dns_server, "nx.test", "MX").rcode() == dns.rcode.NXDOMAIN
    assert _query(dns_server, "servfail.test", "MX").rcode() == dns.rcode.SERVFAIL
    null = _query(dns_server, "nullmx.test", "MX")
    assert [r.to_text() for r in null.answer[0]] == ["0 ."]
    nomx = _query(dns_server, "noMX.test", "MX")
    assert (nomx.rcode(), nomx.answer) == (dns.rcode.NOERROR, [])
    assert [r.to_text() for r in _query(dns_server, "nomx.test", "A").answer[0]] == [OK]
    loop = _query(dns_server, "mx.loop.test", "A")
    assert [r.to_text() for r in loop.answer[0]] == ["127.0.0.1"]
    q = dns.message.make_query("timeout.test", "MX")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(q, dns_server.address[0], port=dns_server.address[1], timeout=0.3)


# ---------------------------------------------------------------------------------------------
# Sluice process helper, against a stand-in daemon
# ---------------------------------------------------------------------------------------------

#: Behaves like ``sluice run -c FILE`` as far as SluiceProcess can tell: greets on the config's
#: smtp-listener, logs to stderr, exits 0 on SIGTERM.
STANDIN = r"""
import re, signal, socket, sys
conf = open(sys.argv[sys.argv.index("-c") + 1]).read()
host, port = re.search(r"^smtp-listener\s+(\S+):(\d+)", conf, re.M).groups()
if "exit-at-once" in conf:
    print("standin: refusing to start", file=sys.stderr); sys.exit(3)
def term(*_):
    print("standin: SIGTERM, bye", file=sys.stderr); sys.exit(0)
signal.signal(signal.SIGTERM, term)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, int(port))); srv.listen(16)
print("standin: listening", file=sys.stderr, flush=True)
while True:
    c, _ = srv.accept(); c.sendall(b"220 standin ESMTP\r\n"); c.close()
"""


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    path = tmp_path / "standin.py"
    path.write_text(STANDIN)
    return path


@pytest.mark.interop
def test_sluice_process_lifecycle_with_standin(
    standin: Path,
    sluice_config: Callable[..., Path],
    sluice_factory: Callable[..., SluiceProcess],
    sluice_listener: tuple[str, int],
) -> None:
    config = sluice_config()
    assert listener_from_config(config) == sluice_listener
    proc = sluice_factory(config, argv=[sys.executable, str(standin), "run", "-c", str(config)])
    assert proc.greeting.startswith(b"220 standin")
    first_pid = proc.pid
    assert proc.stop() == 0
    assert "standin: SIGTERM, bye" in proc.stderr_text()

    proc.start()
    assert proc.pid != first_pid
    assert proc.kill9() == -9
    proc.restart()
    assert proc.running
    proc.restart(hard=True)
    assert proc.runs == 4
    assert proc.stderr_text().count("standin: listening") == 4
    proc.wait_for_stderr(r"=== sluice run 4")


@pytest.mark.interop
def test_sluice_process_reports_a_failed_start(
    standin: Path, sluice_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = sluice_config(extra="# exit-at-once")
    proc = SluiceProcess(
        config,
        workdir=tmp_path / "run",
        argv=[sys.executable, str(standin), "-c", str(config)],
        start_timeout=5,
    )
    with pytest.raises(PeerError, match="refusing to start"):
        proc.start()
    assert proc.returncode == 3


# ---------------------------------------------------------------------------------------------
# config writer
# ---------------------------------------------------------------------------------------------


def test_config_writer_output_passes_check_config(
    sluice_config: Callable[..., Path],
    dns_server: DnsTestServer,
    e2e_port: int,
    sluice_listener: tuple[str, int],
) -> None:
    config = sluice_config(
        vmtas={"v1": [("127.0.0.21", "v1.src.test")], "v2": [("127.0.0.22", "v2.src.test")]},
        domains={
            "*": {"retry-after": "1m"},
            "sink.test": {"max-smtp-out": 5, "max-msg-rate": "600/h"},
            "ok.test": {"max-msg-per-connection": "10"},
        },
        extra=[
            "<virtual-mta-pool pool1>",
            "    virtual-mta v1",
            "    virtual-mta v2",
            "</virtual-mta-pool>",
        ],
    )
    text = config.read_text()
    assert f"dns-server {dns_server.address[0]}:{dns_server.address[1]}" in text
    assert f"default-smtp-port {e2e_port}" in text
    run = subprocess.run(
        [sys.executable, "-m", "sluice", "check-config", "--json", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] is True
    assert doc["errors"] == []
    assert doc["warnings"] == []
    assert doc["listeners"] == [f"{sluice_listener[0]}:{sluice_listener[1]}"]
    assert doc["vmtas"]["v1"]["source_hosts"] == ["127.0.0.21 v1.src.test"]
    assert sorted(n for b in doc["domain_blocks"] for n in b["names"]) == [
        "*",
        "ok.test",
        "sink.test",
    ]
