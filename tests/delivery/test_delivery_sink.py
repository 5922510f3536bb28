"""Delivery sessions against Postfix's smtp-sink (a receiver nobody here wrote).

Each test starts its own smtp-sink on a loopback address and a free port, delivers with
``open_session`` / ``Session.deliver`` and checks both our outcomes and what the sink dumped
(client address, HELO, MAIL/RCPT arguments, the message).
"""

from __future__ import annotations

import pytest
from dlv_helpers import (
    SmtpSink,
    kinds,
    literal_settings,
    outcome_of,
    run,
    session,
    transfer,
)

from sluice.delivery import Phase, Session
from sluice.sched.outcome import OutcomeKind, Scope

pytestmark = pytest.mark.interop

D = OutcomeKind.DELIVERED
T = OutcomeKind.TRANSIENT
P = OutcomeKind.PERMANENT


@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3"])
def test_single_and_multi_recipient_reuse_from_the_bound_source(source: str) -> None:
    with SmtpSink("127.0.0.21") as sink:

        async def go() -> Session:
            s = await session(literal_settings([(sink.host, sink.port)], source=source))
            reports = await s.deliver(
                [
                    transfer(1, ["one@sink.test"]),
                    transfer(2, ["a@sink.test", "b@sink.test", "c@sink.test"]),
                    transfer(3, ["z@sink.test"], body=b"Subject: 3\r\n\r\nthird\r\n"),
                ]
            )
            assert [kinds(r) for r in reports] == [{0: D}, {0: D, 1: D, 2: D}, {0: D}]
            assert all(r.data_sent and not r.possible_duplicate for r in reports)
            assert s.is_usable
            assert s.messages_sent == 3
            assert s.pipelining
            assert s.info.local_address == source
            assert s.info.mta == f"{sink.host} ({sink.host})"
            assert "PIPELINING" in s.info.esmtp_available
            await s.close()
            assert not s.is_usable
            return s

        run(go())
        dumps = sink.dumps()
    assert len(dumps) == 3
    assert {d.client_addr for d in dumps} == {source}
    assert {d.helo for d in dumps} == {"out.sluice.test"}
    by_rcpts = sorted(len(d.rcpts) for d in dumps)
    assert by_rcpts == [1, 1, 3]
    third = next(d for d in dumps if d.rcpts == ["<z@sink.test>"])
    assert third.message.startswith(b"Subject: 3\n\nthird\n")


@pytest.mark.parametrize("flags", [("-p",), ()], ids=["sink-without-pipelining", "ignore"])
def test_lock_step_without_pipelining(flags: tuple[str, ...]) -> None:
    with SmtpSink("127.0.0.22", *flags) as sink:

        async def go() -> None:
            s = await session(
                literal_settings([(sink.host, sink.port)], ignore_pipelining=not flags)
            )
            assert not s.pipelining
            reports = await s.deliver([transfer(1, ["a@sink.test", "b@sink.test"]), transfer(2)])
            assert [kinds(r) for r in reports] == [{0: D, 1: D}, {0: D}]
            await s.close()

        run(go())
        assert len(sink.dumps()) == 2


def test_rcpt_4xx_and_5xx_then_rset_and_reuse() -> None:
    # -r RCPT: every RCPT gets 450; -f implies no pipelining; smtp-sink's replies are fixed,
    # so the mix per recipient is tested with the Python receiver (test_delivery_replies).
    with SmtpSink("127.0.0.23", "-r", "RCPT") as soft, SmtpSink("127.0.0.24", "-f", "RCPT") as hard:

        async def go() -> None:
            s = await session(literal_settings([(soft.host, soft.port)]))
            r1, r2 = await s.deliver([transfer(1, ["a@sink.test", "b@sink.test"]), transfer(2)])
            assert kinds(r1) == {0: T, 1: T}
            assert kinds(r2) == {0: T}
            o = outcome_of(r1, 0)
            assert (o.scope, o.phase, o.code, o.status) == (
                Scope.RECIPIENT,
                Phase.RCPT,
                450,
                "4.3.0",
            )
            assert not r1.data_sent
            assert s.is_usable  # a transaction refused at RCPT leaves the session usable
            await s.close()
            s = await session(literal_settings([(hard.host, hard.port)]))
            (r,) = await s.deliver([transfer(3)])
            o = outcome_of(r, 0)
            assert (o.kind, o.scope, o.code) == (P, Scope.RECIPIENT, 500)
            assert s.is_usable
            await s.close()

        run(go())
        assert soft.dumps() == []
        assert hard.dumps() == []


def test_hang_up_after_the_dot_is_a_possible_duplicate() -> None:
    with SmtpSink("127.0.0.25", "-q", ".") as sink:

        async def go() -> None:
            s = await session(literal_settings([(sink.host, sink.port)]))
            r1, r2 = await s.deliver([transfer(1, ["a@sink.test", "b@sink.test"]), transfer(2)])
            o = outcome_of(r1, 0)
            assert kinds(r1) == {0: T, 1: T}
            assert r1.possible_duplicate
            assert o.possible_duplicate
            assert o.phase is Phase.DOT
            assert o.scope is Scope.MESSAGE  # tried: deferred with a penalty, not "untried"
            assert r1.data_sent
            # The next transfer was never tried on the dead session: session scope.
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope, o2.possible_duplicate) == (T, Scope.SESSION, False)
            assert not r2.data_sent
            assert s.possible_duplicates == 1
            assert not s.is_usable
            await s.close()  # QUIT on a dead session: nothing happens, nothing raises

        run(go())


def test_421_at_connect_falls_back_to_the_next_host() -> None:
    with SmtpSink("127.0.0.26", "-Q", "CONNECT") as bad, SmtpSink("127.0.0.27") as good:

        async def go() -> None:
            settings = literal_settings([(bad.host, bad.port), (good.host, good.port)])
            s = await session(settings)
            assert s.info.remote_address == good.host
            assert [f.address for f in s.fallbacks] == [bad.host]
            assert "421" in s.fallbacks[0].reason
            (r,) = await s.deliver([transfer(1)])
            assert kinds(r) == {0: D}
            await s.close()

        run(go())
        assert len(good.dumps()) == 1


def test_slow_dot_reply_past_the_termination_timeout() -> None:
    with SmtpSink("127.0.0.28", "-W", ".:3") as sink:

        async def go() -> None:
            fast = literal_settings([(sink.host, sink.port)], smtp_data_termination_timeout=0.3)
            s = await session(fast)
            (r,) = await s.deliver([transfer(1)])
            o = outcome_of(r, 0)
            assert (o.kind, o.possible_duplicate, o.phase) == (T, True, Phase.DOT)
            assert "no reply to the final dot" in o.text
            assert not s.is_usable
            await s.close()
            assumed = literal_settings(
                [(sink.host, sink.port)],
                smtp_data_termination_timeout=0.3,
                assume_delivery_upon_data_termination_timeout=True,
            )
            s = await session(assumed)
            (r,) = await s.deliver([transfer(2)])
            o = outcome_of(r, 0)
            assert (o.kind, o.possible_duplicate) == (D, False)
            assert not r.possible_duplicate
            assert s.possible_duplicates == 0
            await s.close()

        run(go())


def test_connection_refused_on_every_host_is_a_site_failure() -> None:
    from dlv_helpers import NO_DNS, free_port

    from sluice.delivery import ConnectFailure, open_session

    async def go() -> None:
        import random

        hosts = [("127.0.0.29", free_port("127.0.0.29")), ("127.0.0.30", free_port("127.0.0.30"))]
        failed = await open_session("x.test", literal_settings(hosts), NO_DNS, random.Random(1))
        assert isinstance(failed, ConnectFailure)
        o = failed.outcome
        assert (o.kind, o.scope, o.status, o.phase) == (T, Scope.SITE, "4.4.1", Phase.CONNECT)
        assert failed.connect_attempts == 2
        assert len(failed.fallbacks) == 2

    run(go())
