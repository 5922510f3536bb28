"""T29 through the real daemon: per-recipient temporary and permanent replies in one transaction,
DSNs (RFC 3464) to the envelope sender and none for ``MAIL FROM:<>``, and a 421 greeting from
the primary MX with a working secondary."""

from __future__ import annotations

import dataclasses
import time

import pytest
from tests.delivery_e2e.dlv_e2e_support import (
    EXTRA_ADDRS,
    SynCounter,
    World,
    add_mx_zone,
    dsns_at,
    return_path,
    wait_for,
    wait_for_len,
)
from tests.e2e.dnszones import RECEIVER_ADDRS
from tests.e2e.postfix_peer import PostfixReceiver

pytestmark = pytest.mark.interop

OK = RECEIVER_ADDRS["ok"]
R421 = RECEIVER_ADDRS["r421"]
MX2 = EXTRA_ADDRS["mx2"]
RCPT1, RCPT2, RCPT3 = "rcpt1@ok.test", "rcpt2@ok.test", "rcpt3@ok.test"
ACCESS = {RCPT1: "450 4.2.0 try again later", RCPT2: "550 5.1.1 no such user"}
#: Attempts rcpt1 must have been refused before the receiver is changed to take it.
DEFERRALS = 2


def test_t29_per_recipient_outcomes_dsns_and_secondary_mx(
    world: World, src_receiver: PostfixReceiver, syn_counter: SynCounter
) -> None:
    ok = world.make_postfix(host=OK, domains=("ok.test",), recipient_access=ACCESS)
    world.make_sink(R421, reply_421=("CONNECT",))
    secondary = world.make_sink(MX2)
    add_mx_zone(world.dns, "mx421.test", [(10, "mx.r421.test", R421), (20, "mx2.mx421.test", MX2)])
    world.start_sluice(domains={"*": {"retry-after": "2s", "bounce-after": "5m"}})

    led = world.ledger
    mix = led.make([RCPT1, RCPT2, RCPT3])
    null = dataclasses.replace(led.make([RCPT2, "null3@ok.test"]), sender="")
    via_secondary = led.make(["x@mx421.test"])
    assert world.inject([mix, null, via_secondary]).acked == 3

    # rcpt3 delivered, rcpt2 bounced, rcpt1 deferred and retried.
    wait_for(lambda: len(ok.deliveries()) >= 2, 15, "rcpt3 and null3 delivered")
    wait_for(lambda: len(world.acct().of("b", rcpt=RCPT2)) >= 2, 10, "rcpt2 bounces")
    wait_for(
        lambda: len(world.acct().of("t", rcpt=RCPT1)) >= DEFERRALS,
        15,
        f"{DEFERRALS} deferrals of rcpt1",
    )
    assert [d.recipient for d in ok.deliveries() if d.seq == mix.seq] == [RCPT3]
    deferrals = world.acct().of("t", rcpt=RCPT1)
    assert all(r["dsnStatus"].startswith("4.2.0") for r in deferrals), deferrals

    # The receiver changes its mind: rcpt1 is taken at the next retry.
    ok.stop()
    ok = world.make_postfix(host=OK, domains=("ok.test",))
    wait_for(lambda: [d for d in ok.deliveries() if d.recipient == RCPT1], 15, "rcpt1 delivered")
    report = led.check(
        [*ok.deliveries(), *secondary.deliveries()],
        bounced=[(mix.seq, RCPT2), (null.seq, RCPT2)],
    )
    assert (report.acked_lost, report.dup, report.phantom) == (0, 0, 0)
    assert sorted((d.seq, d.recipient) for d in ok.deliveries()) == sorted(
        [(mix.seq, RCPT1), (mix.seq, RCPT3), (null.seq, "null3@ok.test")]
    )

    # 421 at the primary's greeting: delivered once through the secondary MX.
    wait_for(secondary.deliveries, 10, "delivery through the secondary MX")
    assert [(d.seq, d.recipient) for d in secondary.deliveries()] == [
        (via_secondary.seq, "x@mx421.test")
    ]
    assert syn_counter.syns(R421), "the primary MX was never tried"

    acct = world.acct()
    finals = [r for r in acct.final() if r["rcpt"] != led.sender]  # not the DSN's own
    assert len(finals) == 6
    assert {(r["type"], r["rcpt"]) for r in finals} == {
        ("d", RCPT1),
        ("b", RCPT2),
        ("d", RCPT3),
        ("d", "null3@ok.test"),
        ("d", "x@mx421.test"),
    }
    for row in acct.of("b", rcpt=RCPT2):
        assert row["dsnStatus"].startswith("5.1.1")
        assert row["bounceCat"] == "bad-mailbox"

    # Exactly one DSN, for rcpt2 of the message with a sender; none for MAIL FROM:<>.
    wait_for(lambda: dsns_at(src_receiver), 15, "the DSN for rcpt2")
    time.sleep(1.5)  # a second (wrong) DSN would be queued in the same batch
    dsns = dsns_at(src_receiver)
    assert len(dsns) == 1, [d.final_recipients for d in dsns]
    (dsn,) = dsns
    assert dsn.envelope_rcpt == led.sender
    assert dsn.report_type == "delivery-status"
    assert dsn.final_recipients == [RCPT2]
    assert dsn.statuses[0].startswith("5.1.1")
    assert dsn.per_recipient[0]["action"] == "failed"
    assert "reporting-mta" in dsn.per_message
    assert dsn.original_headers.get("message-id") == mix.message_id
    (stored,) = src_receiver.messages()
    assert return_path(stored.raw) == "<>", "a DSN is sent with the null reverse-path"
    # The DSN is itself accounted for: one d record, from <>.
    dsn_rows = wait_for_len(lambda: world.acct().of("d", rcpt=led.sender), 1, 5, "DSN d record")
    assert [(r["orig"], r["queue"]) for r in dsn_rows] == [("", "src.test/{default}")]
