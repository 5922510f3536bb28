"""The simulators on real loopback sockets, driven by smtplib from several source addresses."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import time
from collections.abc import Callable

import pytest

from sluice.clock import FakeClock
from sluice.sim import (
    Faults,
    MicrosoftParams,
    MicrosoftProfile,
    ReceiverSpec,
    SimCluster,
    SimServer,
    Stage,
    ThreadedCluster,
    demo_receivers,
)

Sim = Callable[..., ThreadedCluster]
A = "127.0.0.2"
B = "127.0.0.3"


def client(tc: ThreadedCluster, source: str, timeout: float = 10.0) -> smtplib.SMTP:
    host, port = tc.address("mx")
    return smtplib.SMTP(host, port, source_address=(source, 0), timeout=timeout)


def message(seq: str, body: str = "hello") -> str:
    return f"Message-ID: <{seq}@test>\r\nX-Test-Seq: {seq}\r\nSubject: t\r\n\r\n{body}\r\n"


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_counts_per_source_ip_are_exact(sim: Sim) -> None:
    tc = sim(record=True)
    sizes = 0
    with client(tc, A) as s:
        for i in range(3):
            msg = message(f"a{i}")
            sizes += len(msg)
            s.sendmail("x@src.test", ["r1@dst.test"], msg)
    for i in range(2):
        with client(tc, A) as s:
            msg = message(f"a{i + 3}")
            sizes += len(msg)
            s.sendmail("x@src.test", ["r1@dst.test"], msg)
    with client(tc, B) as s:
        for i in range(5):
            s.sendmail("x@src.test", ["r1@dst.test", "r2@dst.test"], message(f"b{i}"))
    wait_for(lambda: tc.stats("mx").total.current == 0)
    st = tc.stats("mx")
    a, b = st.source(A), st.source(B)
    assert (a.connections, a.messages, a.recipients, a.peak) == (3, 5, 5, 1)
    assert (b.connections, b.messages, b.recipients, b.peak) == (1, 5, 10, 1)
    assert a.message_bytes == sizes
    # Replies: greeting, EHLO, MAIL, RCPT, DATA 354, final 250, QUIT 221.
    assert a.code(220) == 3
    assert a.code(354) == 5
    assert a.code(221) == 3
    assert a.code(250) == 3 + 5 * 3
    assert b.code(250) == 1 + 5 * 4
    assert a.bytes_in > a.message_bytes
    assert a.bytes_out > 0
    assert st.total.messages == 10
    assert st.total.recipients == 15
    assert st.source("127.0.0.99").messages == 0
    assert a.first_message_at is not None
    assert a.last_message_at is not None
    assert a.first_message_at <= a.last_message_at
    check = tc.ledger("mx").check_messages(
        [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    )
    assert check.clean
    entries = tc.ledger("mx").entries
    assert {e.source_ip for e in entries} == {A, B}
    assert entries[-1].recipients == ("r1@dst.test", "r2@dst.test")
    assert entries[-1].message_id == "<b4@test>"


def test_concurrency_sampling(sim: Sim) -> None:
    tc = sim(sample_interval=0.1)
    held = [client(tc, A) for _ in range(4)] + [client(tc, B) for _ in range(2)]
    for s in held:
        s.ehlo()
    start = tc.stats("mx").taken_at
    wait_for(lambda: any(x.at > start + 0.25 for x in tc.stats("mx").samples))
    st = tc.stats("mx")
    assert st.total.current == 6
    assert st.total.peak == 6
    assert st.source(A).peak == 4
    assert st.source(B).peak == 2
    assert st.peak_sampled() == 6
    assert st.peak_sampled(A) == 4
    assert st.peak_sampled(B) == 2
    gaps = [y.at - x.at for x, y in zip(st.samples, st.samples[1:], strict=False)]
    assert all(g > 0.05 for g in gaps)
    for s in held:
        s.quit()
    wait_for(lambda: tc.stats("mx").total.current == 0)
    mark = tc.stats("mx").taken_at
    wait_for(lambda: any(x.at > mark + 0.15 for x in tc.stats("mx").samples))
    last = tc.stats("mx").samples[-1]
    assert last.total == 0
    assert dict(last.by_ip) == {}


def test_per_recipient_mix(sim: Sim) -> None:
    tc = sim()
    with client(tc, A) as s:
        refused = s.sendmail(
            "x@src.test",
            ["ok1@d.test", "t450-busy@d.test", "t550-gone@d.test", "ok2@d.test"],
            message("m1"),
        )
        assert {k: v[0] for k, v in refused.items()} == {
            "t450-busy@d.test": 450,
            "t550-gone@d.test": 550,
        }
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("x@src.test", ["ok@d.test", "d554-spam@d.test"], message("m2"))
        assert err.value.smtp_code == 554
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("x@src.test", ["t550-a@d.test"], message("m3"))
        s.sendmail("x@src.test", ["ok@d.test"], message("m4"))
    st = tc.stats("mx").source(A)
    assert st.messages == 2
    assert st.recipients == 3
    assert dict(st.tags) == {"t450": 1, "t550": 2, "d554": 1}


def test_hang_up_after_the_final_dot(sim: Sim) -> None:
    tc = sim(record=True)
    with client(tc, A) as s, pytest.raises(smtplib.SMTPServerDisconnected):
        s.sendmail("x@src.test", ["hangup-1@d.test"], message("h1"))
    with client(tc, A) as s:
        s.sendmail("x@src.test", ["ok@d.test"], message("h1"))  # the sender's retry
    wait_for(lambda: tc.stats("mx").total.current == 0)
    st = tc.stats("mx").source(A)
    assert (st.hangups, st.messages) == (1, 1)
    check = tc.ledger("mx").check_messages(["h1"])
    assert check.clean
    assert check.unacknowledged == {"h1": 1}


def test_hang_up_every_nth_message(sim: Sim) -> None:
    tc = sim(faults=Faults(hangup_every=2))
    outcomes = []
    for i in range(4):
        try:
            with client(tc, A) as s:
                s.sendmail("x@src.test", ["ok@d.test"], message(f"n{i}"))
            outcomes.append("ok")
        except smtplib.SMTPServerDisconnected:
            outcomes.append("cut")
    assert outcomes == ["ok", "cut", "ok", "cut"]
    assert tc.stats("mx").source(A).hangups == 2


def test_delayed_final_reply(sim: Sim) -> None:
    tc = sim(faults=Faults(final_reply_delay=0.5), record=True)
    host, port = tc.address("mx")
    with (
        socket.create_connection((host, port), source_address=(A, 0), timeout=5) as sock,
        contextlib.ExitStack() as stack,
    ):
        f = stack.enter_context(sock.makefile("rb"))
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<x@src.test>\r\nRCPT TO:<ok@d.test>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        sock.sendall(message("d1").encode() + b".\r\n")
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)
        assert f.readline().startswith(b"250 2.0.0")
    # A client that gives up during the delay leaves an unacknowledged copy.
    with (
        socket.create_connection((host, port), source_address=(B, 0), timeout=5) as sock,
        contextlib.ExitStack() as stack,
    ):
        f = stack.enter_context(sock.makefile("rb"))
        f.readline()
        sock.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        sock.sendall(b"MAIL FROM:<x@src.test>\r\nRCPT TO:<ok@d.test>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        sock.sendall(message("d2").encode() + b".\r\n")
    wait_for(lambda: tc.stats("mx").total.current == 0)
    check = tc.ledger("mx").check_messages(["d1", "d2"])
    assert check.lost == {"d2"}
    assert check.unacknowledged == {"d2": 1}
    assert tc.stats("mx").source(B).messages == 0


def test_greet_421_and_tarpit(sim: Sim) -> None:
    tc = sim(faults=Faults(greet_421=True))
    with pytest.raises(smtplib.SMTPConnectError) as err:
        client(tc, A)
    assert err.value.smtp_code == 421
    st = tc.stats("mx").source(A)
    assert (st.connections, st.refused_connections, st.tag("greet-421")) == (1, 1, 1)
    tp = sim(faults=Faults(tarpit=True), host="127.0.0.21")
    host, port = tp.address("mx")
    with socket.create_connection((host, port), source_address=(B, 0), timeout=5) as sock:
        sock.sendall(b"EHLO c.test\r\n")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert tp.stats("mx").source(B).current == 1
    wait_for(lambda: tp.stats("mx").total.current == 0)
    assert tp.stats("mx").source(B).code(220) == 0


def test_pipelined_transactions_and_a_protocol_error(sim: Sim) -> None:
    tc = sim()
    host, port = tc.address("mx")
    with (
        socket.create_connection((host, port), source_address=(A, 0), timeout=5) as sock,
        contextlib.ExitStack() as stack,
    ):
        f = stack.enter_context(sock.makefile("rb"))
        f.readline()
        sock.sendall(b"EHLO c.test\r\n")
        ehlo = []
        while not (line := f.readline()).startswith(b"250 "):
            ehlo.append(line)
        keywords = {x[4:].strip().split()[0] for x in [*ehlo[1:], line]}
        assert keywords == {b"PIPELINING", b"SIZE", b"8BITMIME", b"ENHANCEDSTATUSCODES"}
        sock.sendall(
            b"MAIL FROM:<x@src.test>\r\nRCPT TO:<a@d.test>\r\nRCPT TO:<t550-b@d.test>\r\n"
            b"RCPT TO:<c@d.test>\r\nDATA\r\n"
        )
        assert [f.readline()[:3] for _ in range(5)] == [b"250", b"250", b"550", b"250", b"354"]
        sock.sendall(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert f.readline()[:3] == b"250"
        assert f.readline()[:3] == b"221"
    with (
        socket.create_connection((host, port), source_address=(B, 0), timeout=5) as sock,
        contextlib.ExitStack() as stack,
    ):
        f = stack.enter_context(sock.makefile("rb"))
        f.readline()
        sock.sendall(b"EHLO c.test\r\nMAIL FROM:<x@src.test>\r\n")  # EHLO ends a group
        reply = b""
        while line := f.readline():
            reply = line
        assert reply.startswith(b"554 5.5.0")
    wait_for(lambda: tc.stats("mx").total.current == 0)
    st = tc.stats("mx")
    assert st.source(A).recipients == 2
    assert st.source(B).code(554) == 1


def test_microsoft_on_sockets_with_an_injected_clock(sim: Sim) -> None:
    clock = FakeClock()
    params = MicrosoftParams(hourly_budget=3, throttle_rate=None, max_connections=2, block_after=2)
    tc = sim(profile=MicrosoftProfile(params), clock=clock.monotonic, timeline=True)
    first, second = client(tc, A), client(tc, A)
    with pytest.raises(smtplib.SMTPConnectError) as err:
        client(tc, A)  # the third connection from A
    assert err.value.smtp_code == 421
    assert b"4.3.2" in err.value.smtp_error
    with client(tc, B) as other:  # B has its own cap
        other.noop()
    for i in range(3):
        first.sendmail("x@src.test", ["u@hotmail.com"], message(f"m{i}"))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        first.sendmail("x@src.test", ["u@hotmail.com"], message("m3"))
    code, text = refused.value.recipients["u@hotmail.com"]
    assert code == 421
    assert text.startswith(b"RP-001 ")
    # The 421 closed that connection; the budget is per IP, so the other one is refused too.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        second.sendmail("x@src.test", ["u@hotmail.com"], message("m3"))
    # The 4.3.2 opened the deferral period; this third further deferral is more than
    # block_after=2, so it earns the block and the next recipient gets S3150.
    with client(tc, A) as third, pytest.raises(smtplib.SMTPRecipientsRefused):
        third.sendmail("x@src.test", ["u@hotmail.com"], message("m3"))
    with client(tc, A) as fourth, pytest.raises(smtplib.SMTPRecipientsRefused) as blocked:
        fourth.sendmail("x@src.test", ["u@hotmail.com"], message("m3"))
    code, text = blocked.value.recipients["u@hotmail.com"]
    assert code == 550
    assert b"(S3150)" in text
    clock.advance(params.block_duration)  # past the block and the rolling hour
    with client(tc, A) as fifth:
        fifth.sendmail("x@src.test", ["u@hotmail.com"], message("m3"))
    st = tc.stats("mx")
    a = st.source(A)
    assert a.messages == 4
    assert dict(a.tags) == {"4.3.2": 1, "RP-001": 3, "S3150": 1}
    assert [e.tag for e in st.events] == ["4.3.2", "RP-001", "RP-001", "RP-001", "S3150"]
    assert st.events[0].at == FakeClock().monotonic()
    assert len(a.connect_times) == a.connections == 6
    assert a.message_times[-1] == clock.monotonic()


def test_microsoft_cap_at_ehlo(sim: Sim) -> None:
    tc = sim(profile=MicrosoftProfile(MicrosoftParams(max_connections=1, connect_stage=Stage.EHLO)))
    with client(tc, A) as s:
        s.ehlo()
        other = client(tc, A)  # greeted: the cap is checked at EHLO
        code, text = other.ehlo()
        assert code == 421
        assert text.startswith(b"4.3.2 ")
        other.close()
    wait_for(lambda: tc.stats("mx").total.current == 0)
    st = tc.stats("mx").source(A)
    assert (st.connections, st.refused_connections) == (2, 1)
    with client(tc, A) as s:  # the slot is free again
        assert s.ehlo()[0] == 250


def test_cluster_shares_one_port_and_maps_domains() -> None:
    async def run() -> None:
        cluster = SimCluster(demo_receivers(time_scale=0.01), sample_interval=0.1)
        await cluster.start()
        try:
            ports = {s.port for s in cluster}
            assert ports == {cluster.port}
            hosts = [s.host for s in cluster]
            assert hosts == ["127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"]
            domains = cluster.domain_map()
            assert domains["hotmail.com"] == ("127.0.0.20", cluster.port)
            assert domains["gmail.com"] == ("127.0.0.21", cluster.port)
            assert domains["example.net"] == ("127.0.0.23", cluster.port)
            ms = cluster["microsoft"].profile
            assert isinstance(ms, MicrosoftProfile)
            assert ms.params.budget_window == pytest.approx(36.0)
            reader, writer = await asyncio.open_connection("127.0.0.21", cluster.port)
            assert (await reader.readline()).startswith(b"220 mx.gmail.sim.test ")
            writer.write(b"QUIT\r\n")
            assert (await reader.readline()).startswith(b"221 ")
            writer.close()
            await writer.wait_closed()
            assert cluster.stats()["gmail"].total.connections == 1
        finally:
            await cluster.stop()

    asyncio.run(run())


def test_fixed_port_clash_is_reported() -> None:
    async def run() -> None:
        first = SimServer(host="127.0.0.24")
        await first.start()
        try:
            cluster = SimCluster([ReceiverSpec(name="x", host="127.0.0.24")], port=first.port)
            with pytest.raises(OSError):  # noqa: PT011 - the OS's errno is the point
                await cluster.start()
        finally:
            await first.stop()

    asyncio.run(run())


def test_reset_stats_keeps_open_connections_and_profile_state(sim: Sim) -> None:
    clock = FakeClock()
    profile = MicrosoftProfile(MicrosoftParams(hourly_budget=2, throttle_rate=None))
    tc = sim(profile=profile, clock=clock.monotonic, record=True)
    held = client(tc, A)
    held.sendmail("x@src.test", ["u@hotmail.com"], message("r1"))
    tc.reset_stats("mx")
    st = tc.stats("mx")
    assert st.source(A).messages == 0
    assert (st.source(A).current, st.total.current, st.total.peak) == (1, 1, 1)
    assert len(tc.ledger("mx")) == 0
    held.sendmail("x@src.test", ["u@hotmail.com"], message("r2"))
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # the budget remembers r1
        held.sendmail("x@src.test", ["u@hotmail.com"], message("r3"))
    wait_for(lambda: tc.stats("mx").total.current == 0)
    assert tc.all_stats()["mx"].source(A).messages == 1
    assert tc.call(lambda c: profile.state(A, clock.monotonic()).budget_used) == 2


def test_start_twice_is_an_error() -> None:
    async def run() -> None:
        server = SimServer(host="127.0.0.24")
        await server.start()
        try:
            with pytest.raises(RuntimeError, match="already"):
                await server.start()
        finally:
            await server.stop()
        await server.stop()  # idempotent

    asyncio.run(run())
