"""Delivery sessions against a scripted receiver: per-recipient replies (T29), scopes,
ambiguous delivery (T28), 421 handling, content refusals, outbound framing (T08)."""

from __future__ import annotations

import asyncio
import random

import pytest
from dlv_helpers import NO_DNS, kinds, literal_settings, outcome_of, run, session, transfer
from dlv_receiver import AtDot, Receiver, Script

from sluice.delivery import (
    ConnectFailure,
    DeliveryMisuseError,
    Phase,
    Session,
    Transfer,
    TransferRcpt,
    open_session,
)
from sluice.message.envelope import Envelope, Notify, Recipient
from sluice.sched.outcome import OutcomeKind, Scope
from sluice.smtp import Reply
from sluice.smtp import replies as R

D = OutcomeKind.DELIVERED
T = OutcomeKind.TRANSIENT
P = OutcomeKind.PERMANENT
MIX = ("r1@mx.test", "r2@mx.test", "r3@mx.test")


def rx_settings(rx: Receiver, **kw: object):  # type: ignore[no-untyped-def]
    return literal_settings([(rx.host, rx.port)], **kw)


@pytest.mark.parametrize("pipelining", [True, False])
def test_t29_per_recipient_mix_in_one_transaction(pipelining: bool) -> None:
    script = Script(
        rcpt={
            MIX[0]: Reply.of(450, "4.2.1", "mailbox busy"),
            MIX[1]: Reply.of(550, "5.1.1", "no such user"),
        }
    )

    async def go() -> None:
        async with Receiver(script, "127.0.0.31") as rx:
            s = await session(rx_settings(rx, ignore_pipelining=not pipelining))
            (r,) = await s.deliver([transfer(1, MIX)])
            assert kinds(r) == {0: T, 1: P, 2: D}
            o1, o2, o3 = (outcome_of(r, i) for i in range(3))
            assert (o1.scope, o1.code, o1.status, o1.phase) == (
                Scope.RECIPIENT,
                450,
                "4.2.1",
                Phase.RCPT,
            )
            assert o1.text == "450 4.2.1 mailbox busy"
            assert (o2.scope, o2.code, o2.status) == (Scope.RECIPIENT, 550, "5.1.1")
            assert (o3.scope, o3.code, o3.phase) == (Scope.RECIPIENT, 250, Phase.DOT)
            await s.close()
            assert [m.rcpts for m in rx.messages] == [[MIX[2]]]
            assert rx.quits == 1
            assert rx.errors == []

    run(go())


def test_pipelined_group_is_one_write_and_rset_rides_with_the_next_group() -> None:
    script = Script(rcpt={"bad@mx.test": Reply.of(550, "5.1.1", "no")})

    async def go() -> None:
        async with Receiver(script, "127.0.0.32") as rx:
            s = await session(rx_settings(rx))
            r1, r2 = await s.deliver([transfer(1, ["bad@mx.test"]), transfer(2)])
            assert kinds(r1) == {0: P}
            assert kinds(r2) == {0: D}
            await s.close()
            raw = bytes(rx.raw[0])
            # MAIL, RCPT, DATA of the first transfer, then RSET + MAIL + RCPT + DATA.
            assert b"\r\nRSET\r\nMAIL FROM:<sender@sluice.test>" in raw
            assert raw.count(b"RSET") == 1
            assert len(rx.messages) == 1
            assert rx.errors == []

    run(go())


def test_mail_refused_is_message_scope_and_dot_replies_decide_the_message() -> None:
    async def go() -> None:
        async with Receiver(
            Script(mail_reply=Reply.of(550, "5.7.1", "sender blocked")), "127.0.0.33"
        ) as rx:
            s = await session(rx_settings(rx))
            (r,) = await s.deliver([transfer(1, ["a@mx.test", "b@mx.test"])])
            (result,) = r.results
            assert result.rcpts == (0, 1)
            o = result.outcome
            assert (o.kind, o.scope, o.phase, o.status) == (P, Scope.MESSAGE, Phase.MAIL, "5.7.1")
            assert s.is_usable
            await s.close()
        for reply, kind in (
            (Reply.of(554, "5.7.0", "spam"), P),
            (Reply.of(451, "4.3.0", "later"), T),
        ):
            async with Receiver(Script(dot_reply=reply), "127.0.0.33") as rx:
                s = await session(rx_settings(rx))
                (r,) = await s.deliver([transfer(2)])
                o = outcome_of(r, 0)
                assert (o.kind, o.scope, o.phase, o.code) == (
                    kind,
                    Scope.MESSAGE,
                    Phase.DOT,
                    reply.code,
                )
                assert r.data_sent
                assert s.is_usable
                await s.close()

    run(go())


def test_250_then_cut_is_delivered_and_never_resent() -> None:
    async def go() -> None:
        async with Receiver(Script(at_dot=AtDot.REPLY_THEN_HANG_UP), "127.0.0.34") as rx:
            s = await session(rx_settings(rx))
            r1, r2 = await s.deliver([transfer(1), transfer(2)])
            assert kinds(r1) == {0: D}
            assert not r1.possible_duplicate
            o2 = outcome_of(r2, 0)
            assert (o2.kind, o2.scope) == (T, Scope.SESSION)  # untried: no penalty
            assert s.possible_duplicates == 0
            assert not s.is_usable
            await s.close()  # the failed QUIT is not a failed delivery
            assert rx.dots == 1
            assert len(rx.messages) == 1

    run(go())


def test_t28_hang_up_after_dot_then_retry_delivers_exactly_once_more() -> None:
    # Ledger: the first attempt arrived but was not acknowledged; the retry delivers it
    # again. Duplicates ≤ 1 per ambiguous attempt, and the counter says so.
    async def go() -> None:
        async with Receiver(Script(at_dot=AtDot.HANG_UP, at_dot_times=1), "127.0.0.35") as rx:
            s = await session(rx_settings(rx))
            (r,) = await s.deliver([transfer(1)])
            assert r.possible_duplicate
            assert s.possible_duplicates == 1
            s2 = await session(rx_settings(rx))
            (again,) = await s2.deliver([transfer(1)])
            assert kinds(again) == {0: D}
            await s2.close()
            await s.close()
            arrived = len(rx.messages) + len(rx.unacknowledged)
            assert arrived == 2
            assert arrived - 1 <= s.possible_duplicates

    run(go())


def test_421_mid_session_ends_it_or_moves_to_the_next_mx() -> None:
    gone = Reply.of(421, "4.7.0", "too busy, closing")

    async def go() -> None:
        async with (
            Receiver(Script(rcpt={"x@mx.test": gone}), "127.0.0.36") as first,
            Receiver(Script(), "127.0.0.37") as second,
        ):
            hosts = [(first.host, first.port), (second.host, second.port)]
            s = await session(literal_settings(hosts))
            r1, r2 = await s.deliver([transfer(1, ["x@mx.test"]), transfer(2)])
            for r in (r1, r2):
                o = outcome_of(r, 0)
                assert (o.kind, o.scope) == (T, Scope.SESSION)
            assert outcome_of(r1, 0).code == 421
            assert not s.is_usable
            assert second.messages == []
            await s.close()
            s = await session(literal_settings(hosts, smtp_421_means_mx_unavailable=True))
            r1, r2 = await s.deliver([transfer(3, ["x@mx.test"]), transfer(4)])
            assert kinds(r1) == {0: D}
            assert kinds(r2) == {0: D}
            assert r1.info is not None
            assert r1.info.remote_address == second.host
            assert [f.address for f in s.fallbacks] == [first.host]
            assert len(second.messages) == 2
            assert s.is_usable
            await s.close()

    run(go())


def test_421_with_no_host_left_is_a_site_failure() -> None:
    gone = Reply.of(421, "4.7.0", "closing")

    async def go() -> None:
        async with Receiver(Script(mail_reply=gone), "127.0.0.38") as rx:
            s = await session(rx_settings(rx, smtp_421_means_mx_unavailable=True))
            r1, r2 = await s.deliver([transfer(1), transfer(2)])
            for r in (r1, r2):
                o = outcome_of(r, 0)
                assert (o.kind, o.scope) == (T, Scope.SITE)
            await s.close()

    run(go())


def test_t08_outbound_framing_is_canonical_and_dot_stuffed() -> None:
    body = (
        b".starts with a dot\n"
        b"bare LF\n"
        b"bare CR\r"
        b"CRLF\r\n"
        b".\n"
        b"..two\r\n"
        b"mixed\n\r\n"
        b"last line without newline ."
    )
    expected = (
        b".starts with a dot\r\nbare LF\r\nbare CR\r\nCRLF\r\n.\r\n..two\r\nmixed\r\n\r\n"
        b"last line without newline .\r\n"
    )

    async def go() -> None:
        async with Receiver(Script(), "127.0.0.39") as rx:
            s = await session(rx_settings(rx))
            (r,) = await s.deliver([transfer(1, body=body)])
            assert kinds(r) == {0: D}
            await s.close()
            raw = bytes(rx.raw[0])
            start = raw.index(b"DATA\r\n") + len(b"DATA\r\n")
            content = raw[start : raw.index(b"\r\n.\r\n", start) + 5]
            assert b"\x00" not in raw
            assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")
            stuffed = b"".join(
                (b"." + line if line.startswith(b".") else line) + b"\r\n"
                for line in expected.split(b"\r\n")[:-1]
            )
            assert content == stuffed + b".\r\n"
            assert rx.messages[0].data == expected

    run(go())


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"Subject: x\r\n\r\nNUL \x00 here\r\n", "5.6.0"), (b"x" * 999 + b"\r\n", "5.6.0")],
    ids=["nul", "long-line"],
)
def test_unsendable_content_is_refused_without_sending(body: bytes, status: str) -> None:
    async def go() -> None:
        async with Receiver(Script(), "127.0.0.40") as rx:
            s = await session(rx_settings(rx))
            r1, r2 = await s.deliver(
                [transfer(1, ["a@mx.test", "b@mx.test"], body=body), transfer(2)]
            )
            (result,) = r1.results
            o = result.outcome
            assert (o.kind, o.scope, o.status, o.phase) == (P, Scope.MESSAGE, status, Phase.LOCAL)
            assert result.rcpts == (0, 1)
            assert kinds(r2) == {0: D}
            await s.close()
            assert bytes(rx.raw[0]).count(b"MAIL FROM") == 1

    run(go())


def test_8bit_smtputf8_and_size_against_what_the_server_offers() -> None:
    eight = b"Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n"
    utf8_rcpt = ["j\u00fcrgen@mx.test"]

    async def go() -> None:
        plain = Script(extensions=("PIPELINING", "SIZE 1000", "ENHANCEDSTATUSCODES"))
        async with Receiver(plain, "127.0.0.41") as rx:
            s = await session(rx_settings(rx))
            r8, ru, rs, ok = await s.deliver(
                [
                    transfer(1, body=eight),
                    transfer(2, utf8_rcpt),
                    transfer(3, body=b"x\r\n" * 400),
                    transfer(4, body=b"small\r\n"),
                ]
            )
            assert outcome_of(r8, 0).status == "5.6.3"
            assert outcome_of(ru, 0).status == "5.6.7"
            assert outcome_of(rs, 0).status == "5.3.4"
            assert {outcome_of(r, 0).kind for r in (r8, ru, rs)} == {P}
            assert kinds(ok) == {0: D}
            await s.close()
            assert len(rx.messages) == 1
            mail = rx.messages[0].mail
            assert mail is not None
            assert mail.size == len(b"small\r\n")
            assert mail.body is None
        async with Receiver(Script(), "127.0.0.41") as rx:
            s = await session(rx_settings(rx))
            r8, ru = await s.deliver([transfer(5, body=eight), transfer(6, utf8_rcpt)])
            assert kinds(r8) == {0: D}
            assert kinds(ru) == {0: D}
            await s.close()
            m8, mu = rx.messages
            assert m8.mail is not None
            assert m8.mail.body == "8BITMIME"
            assert not m8.mail.smtputf8
            assert mu.mail is not None
            assert mu.mail.smtputf8
            assert mu.rcpts == utf8_rcpt
            assert m8.data == eight

    run(go())


def test_dsn_parameters_follow_the_offer_and_ignore_dsn() -> None:
    env = Envelope(
        sender="s@sluice.test",
        recipients=(
            Recipient(
                address="a@mx.test",
                notify=Notify.FAILURE | Notify.DELAY,
                orcpt="rfc822;a@orig.test",
            ),
        ),
        env_id="job-42",
        ret="HDRS",
    )
    t = Transfer.from_envelope(9, env, [0], b"Subject: dsn\r\n\r\nx\r\n")

    async def go() -> None:
        for ignore in (False, True):
            async with Receiver(Script(), "127.0.0.42") as rx:
                s = await session(rx_settings(rx, ignore_dsn=ignore))
                (r,) = await s.deliver([t])
                assert kinds(r) == {0: D}
                await s.close()
                raw = bytes(rx.raw[0])
                if ignore:
                    assert b"NOTIFY=" not in raw
                    assert b"ENVID=" not in raw
                else:
                    assert b"RET=HDRS ENVID=job-42" in raw
                    assert b"NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@orig.test" in raw

    run(go())


def test_helo_fallback_and_refused_hello() -> None:
    async def go() -> None:
        async with Receiver(Script(ehlo_code=502), "127.0.0.43") as rx:
            s = await session(rx_settings(rx))
            assert not s.info.esmtp
            assert s.info.extensions == ()
            assert not s.pipelining
            (r,) = await s.deliver([transfer(1, ["a@mx.test", "b@mx.test"])])
            assert kinds(r) == {0: D, 1: D}
            await s.close()
            assert rx.messages[0].helo == "out.sluice.test"
        async with Receiver(Script(ehlo_code=550, helo_code=550), "127.0.0.43") as rx:
            for bounce, kind in ((True, P), (False, T)):
                failed = await open_session(
                    "x.test",
                    rx_settings(rx, route_bounce_upon_5xx_greeting=bounce),
                    NO_DNS,
                    random.Random(1),
                )
                assert isinstance(failed, ConnectFailure)
                assert (failed.outcome.kind, failed.outcome.scope) == (kind, Scope.SITE)

    run(go())


def test_5xx_greeting_bounces_or_falls_back() -> None:
    refuse = Script(greeting=Reply.of(554, None, "no service"))

    async def go() -> None:
        async with Receiver(refuse, "127.0.0.44") as bad, Receiver(Script(), "127.0.0.45") as good:
            hosts = [(bad.host, bad.port), (good.host, good.port)]
            failed = await open_session("x.test", literal_settings(hosts), NO_DNS, random.Random(1))
            assert isinstance(failed, ConnectFailure)
            o = failed.outcome
            assert (o.kind, o.scope, o.code, o.phase) == (P, Scope.SITE, 554, Phase.GREETING)
            assert bad.quits == 1  # QUIT after a 554 greeting (RFC 5321 §3.1)
            s = await open_session(
                "x.test",
                literal_settings(hosts, route_bounce_upon_5xx_greeting=False),
                NO_DNS,
                random.Random(1),
            )
            assert isinstance(s, Session)
            assert s.info.remote_address == good.host
            await s.close()

    run(go())


def test_silent_server_hits_the_greeting_timeout_and_the_next_host_is_used() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        silent = await loop.create_server(asyncio.Protocol, "127.0.0.46", 0)
        port = silent.sockets[0].getsockname()[1]
        try:
            async with Receiver(Script(), "127.0.0.47") as good:
                settings = literal_settings(
                    [("127.0.0.46", port), (good.host, good.port)], smtp_greeting_timeout=0.2
                )
                s = await session(settings)
                assert "greeting timeout" in s.fallbacks[0].reason
                await s.close()
        finally:
            silent.close()
            await silent.wait_closed()

    run(go())


def test_deliver_twice_at_once_is_misuse_and_counters_move() -> None:
    async def go() -> None:
        async with Receiver(Script(), "127.0.0.48") as rx:
            s = await session(rx_settings(rx))
            first = asyncio.ensure_future(s.deliver([transfer(1)]))
            await asyncio.sleep(0)
            with pytest.raises(DeliveryMisuseError):
                await s.deliver([transfer(2)])
            assert s.idle_time == 0.0
            await first
            assert s.idle_time >= 0.0
            assert s.messages_sent == 1
            assert s.transactions == 1
            await s.close()

    run(go())


def test_transfer_from_envelope_and_empty_transfer() -> None:
    env = Envelope(
        sender="s@x.test",
        recipients=(Recipient(address="a@y.test"), Recipient(address="b@y.test")),
        smtputf8=True,
    )
    t = Transfer.from_envelope(5, env, [1], b"x")
    assert t.rcpts == (TransferRcpt(index=1, address="b@y.test"),)
    assert t.smtputf8
    with pytest.raises(ValueError, match="at least one"):
        Transfer(msg_id=1, sender="", rcpts=(), body=b"")


def test_reply_helpers() -> None:
    from sluice.delivery.values import reply_line, reply_outcome

    multi = Reply(code=550, lines=("first", "second"), enhanced=None)
    assert reply_line(multi) == "550 first second"
    o = reply_outcome(multi, Scope.RECIPIENT, Phase.RCPT)
    assert (o.kind, o.status) == (P, "5.0.0")
    assert reply_outcome(R.OK, Scope.RECIPIENT, Phase.DOT).kind is D


def test_content_that_makes_no_progress_hits_the_data_send_timeout() -> None:
    big = b"Subject: big\r\n\r\n" + b"y" * 70 + b"\r\n"
    big = big * (24_000_000 // len(big))

    async def go() -> None:
        async with Receiver(Script(stall_content=True), "127.0.0.49") as rx:
            s = await session(rx_settings(rx, data_send_timeout=0.3))
            (r,) = await s.deliver([transfer(1, body=big)])
            o = outcome_of(r, 0)
            assert (o.kind, o.scope, o.phase) == (T, Scope.SESSION, Phase.CONTENT)
            assert not o.possible_duplicate
            assert not r.data_sent
            assert s.possible_duplicates == 0
            assert not s.is_usable
            await s.close()
            assert rx.dots == 0

    run(go())
