"""Virtual MTAs and pools through the real daemon: the receiver sees the configured source
address and EHLO name; X-Virtual-MTA picks the VMTA or pool; a pool's members take turns
(smooth weighted round robin, docs/routing.md)."""

from __future__ import annotations

from collections import Counter

import pytest
from tests.delivery_e2e.dlv_e2e_support import World, wait_for, wait_for_len
from tests.e2e.peers import SmtpSink

pytestmark = pytest.mark.interop

TX = ("127.0.0.2", "tx.test")
M1 = ("127.0.0.3", "m1.test")
M2 = ("127.0.0.4", "m2.test")
DEFAULT_NAME = "dflt.sluice.test"
POOL_MESSAGES = 10


def test_source_address_and_ehlo_name_follow_the_vmta(world: World, smtp_sink: SmtpSink) -> None:
    world.start_sluice(
        sources={"127.0.0.1": {"always-allow-relaying": "yes", "process-x-virtual-mta": "yes"}},
        vmtas={"tx": [TX], "m1": [M1], "m2": [M2]},
        extra=[
            f"host-name {DEFAULT_NAME}",
            "<virtual-mta-pool mkt>",
            "    virtual-mta m1",
            "    virtual-mta m2",
            "</virtual-mta-pool>",
        ],
    )
    make = world.ledger.make
    plain = make(["plain@sink.test"])
    tx = [make([f"tx{i}@sink.test"], extra_headers=[("X-Virtual-MTA", "tx")]) for i in range(3)]
    pool = [
        make([f"pool{i}@sink.test"], extra_headers=[("X-Virtual-MTA", "mkt")])
        for i in range(POOL_MESSAGES)
    ]
    total = 1 + len(tx) + len(pool)
    # One message at a time: the pool's turns are taken in injection order.
    assert world.inject([plain, *tx, *pool], per_connection=20).acked == total
    wait_for(lambda: len(smtp_sink.deliveries()) >= total, 30, f"{total} deliveries")

    report = world.ledger.check(smtp_sink.deliveries())
    assert (report.acked_lost, report.dup, report.phantom) == (0, 0, 0)
    seen = {t.recipients[0]: (t.client, t.helo) for t in smtp_sink.transactions()}
    assert seen["plain@sink.test"] == ("127.0.0.1", DEFAULT_NAME)
    assert {seen[m.recipients[0]] for m in tx} == {TX}
    pool_sources = Counter(seen[m.recipients[0]] for m in pool)
    assert pool_sources == {M1: POOL_MESSAGES // 2, M2: POOL_MESSAGES // 2}
    # The selection header is consumed (retain-x-virtual-mta is off by default).
    assert [d for d in smtp_sink.deliveries() if d.header("X-Virtual-MTA") is not None] == []

    wait_for_len(lambda: world.acct().of("d"), total, 20, "d records")
    acct = world.acct()
    rows = {r["rcpt"]: r for r in acct.of("d")}
    plain_row = rows["plain@sink.test"]
    assert (plain_row["vmta"], plain_row["vmtaPool"]) == ("{default}", "")
    for m in tx:
        row = rows[m.recipients[0]]
        assert (row["vmta"], row["dlvSourceIp"], row["vmtaPool"]) == ("tx", TX[0], "")
        assert row["queue"] == "sink.test/tx"
    for m in pool:
        row = rows[m.recipients[0]]
        src = seen[m.recipients[0]][0]
        assert row["vmtaPool"] == "mkt"
        assert row["dlvSourceIp"] == src
        assert row["vmta"] == ("m1" if src == M1[0] else "m2")
