"""Happy path through the real daemon: mixed messages to Postfix and smtp-sink, with the ledger
and PowerMTA's accounting file (issue 4 "Must show": the CSV parses, has PowerMTA's header,
and every injected recipient appears in exactly one final d or b record)."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from tests.delivery_e2e.dlv_e2e_support import (
    ACCT_HEADER,
    World,
    add_zone,
    wait_for,
    wait_for_len,
)
from tests.e2e.dnszones import RECEIVER_ADDRS
from tests.e2e.peers import SmtpSink
from tests.e2e.postfix_peer import PostfixReceiver

pytestmark = pytest.mark.interop

OK, SINK = RECEIVER_ADDRS["ok"], RECEIVER_ADDRS["sink"]
#: Extra domains whose MX is the smtp-sink (it takes any recipient).
SINK_DOMAINS = ("sink.test", "d1.test", "d2.test")
POSTFIX_DOMAINS = ("ok.test", "nomx.test")
MESSAGES = 60
#: PowerMTA's time format in accounting files: 2026-11-28 02:10:00+0000.
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}$")


def test_mixed_messages_are_delivered_once_and_accounted(
    world: World, postfix_receiver: PostfixReceiver, smtp_sink: SmtpSink
) -> None:
    for dom in SINK_DOMAINS[1:]:
        add_zone(world.dns, dom, SINK)
    world.start_sluice(domains={"*": {"retry-after": "2s"}})

    rnd = random.Random(4)
    domains = POSTFIX_DOMAINS + SINK_DOMAINS
    msgs = []
    for k in range(MESSAGES):
        n = rnd.randint(1, 3)
        rcpts = [f"u{k}-{j}@{rnd.choice(domains)}" for j in range(n)]
        msgs.append(world.ledger.make(rcpts, size=rnd.choice((300, 2_000, 20_000))))
    result = world.inject(msgs, concurrency=4, per_connection=10)
    assert (result.acked, result.unacked, result.refused) == (MESSAGES, 0, 0)

    pairs = {(m.seq, r) for m in msgs for r in m.recipients}
    to_postfix = sum(1 for _, r in pairs if r.split("@")[1] in POSTFIX_DOMAINS)

    def delivered() -> int:
        return len(postfix_receiver.deliveries()) + len(smtp_sink.deliveries())

    wait_for(lambda: delivered() >= len(pairs), 60, f"{len(pairs)} deliveries")
    report = world.ledger.check([*postfix_receiver.deliveries(), *smtp_sink.deliveries()])
    assert report.acked == len(pairs)
    assert (report.acked_lost, report.dup, report.phantom, report.truncated) == (0, 0, 0, 0)
    assert len(postfix_receiver.deliveries()) == to_postfix
    assert postfix_receiver.queue_count() == 0

    wait_for_len(lambda: world.acct().final(), len(pairs), 20, "final accounting records")
    acct = world.acct()
    assert acct.header_line == ACCT_HEADER
    finals = Counter(r["rcpt"].lower() for r in acct.final())
    assert finals == Counter(r for _, r in pairs), "each recipient in exactly one d/b record"
    assert {r["type"] for r in acct.final()} == {"d"}
    received = Counter(r["rcpt"].lower() for r in acct.of("r"))
    assert received == Counter(r for _, r in pairs)
    for row in acct.of("d"):
        domain = row["rcpt"].split("@")[1]
        assert row["orig"] == world.ledger.sender
        assert row["queue"] == f"{domain}/{{default}}"
        assert row["dlvDestinationIp"] == (OK if domain in POSTFIX_DOMAINS else SINK)
        assert row["dsnStatus"].startswith("2.0.0"), row
        assert row["dsnAction"] == "relayed"
        assert row["dsnDiag"].startswith("smtp;250"), row
        assert TIME_RE.match(row["timeLogged"]), row
        assert TIME_RE.match(row["timeQueued"]), row
        assert row["dlvType"] == "smtp"
        assert row["dlvSourceIp"], row
        assert "PIPELINING" in row["dlvEsmtpAvailable"]


def test_delivery_records_carry_the_message_size(world: World, smtp_sink: SmtpSink) -> None:
    """``dlvSize`` of a d record is the size of the message delivered (PowerMTA fills it)."""
    world.start_sluice()
    msgs = [world.ledger.make([f"size{i}@sink.test"], size=1000 + 5000 * i) for i in range(3)]
    assert world.inject(msgs).acked == 3
    wait_for_len(lambda: world.acct().of("d"), 3, 20, "d records")
    acct = world.acct()
    sizes = {r["rcpt"]: r["dlvSize"] for r in acct.of("d")}
    received = {r["rcpt"]: r["dlvSize"] for r in acct.of("r")}
    for m in msgs:
        rcpt = m.recipients[0]
        assert sizes[rcpt], f"d record of {rcpt} has an empty dlvSize"
        # The delivered copy has Sluice's Received header on top of what was injected.
        assert int(sizes[rcpt]) >= len(m.data), (sizes[rcpt], len(m.data))
        assert int(sizes[rcpt]) >= int(received[rcpt])
