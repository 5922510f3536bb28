"""T27 through the real daemon and a real DNS server on loopback: DNS failure semantics.

servfail/timeout → deferred with 4.4.3, retried, never bounced before bounce-after; nx → one
bounce 5.1.2 at once; null MX → one bounce 5.1.10 and no TCP connection (not even to the
A record the name also has); no MX → delivered through the A record; an MX that is Sluice
itself → bounce 5.4.6, no loop. The permanent failures each get one DSN.
"""

from __future__ import annotations

import functools
import time

import pytest
from tests.delivery_e2e.dlv_e2e_support import (
    EXTRA_ADDRS,
    SynCounter,
    World,
    dsns_at,
    wait_for,
    wait_for_len,
)
from tests.e2e.postfix_peer import PostfixReceiver

from sluice.routing import FakeName

pytestmark = pytest.mark.interop

#: Long enough that nothing may expire during the test.
BOUNCE_AFTER = "2m"
#: Seconds the test watches the deferred domains being retried.
WATCH = 12.0
PERMANENT = (("nx", "5.1.2"), ("nullmx", "5.1.10"), ("loop", "5.4.6"))


def test_t27_dns_failure_semantics(
    world: World,
    postfix_receiver: PostfixReceiver,
    src_receiver: PostfixReceiver,
    syn_counter: SynCounter,
) -> None:
    decoy = EXTRA_ADDRS["decoy"]
    # The null MX name also has an A record: a wrong fall-back to it would show as a SYN.
    world.dns.zones["nullmx.test"] = FakeName(mx=((0, "."),), a=(decoy,))
    # Sluice listens on 127.0.0.1:P, where loop.test's MX (127.0.0.1, port P) points.
    world.listener = ("127.0.0.1", world.port)
    world.start_sluice(
        domains={
            "*": {
                "retry-after": "2s",
                "retry-after-dns-error": "2s",
                "bounce-after": BOUNCE_AFTER,
            }
        }
    )
    rcpt = {d: f"user@{d}.test" for d in ("servfail", "timeout", "nx", "nullmx", "nomx", "loop")}
    started = time.monotonic()
    assert world.inject([world.ledger.make([r]) for r in rcpt.values()]).acked == len(rcpt)

    # Permanent verdicts come at once (one queue run each).
    def bounces(address: str) -> list[dict[str, str]]:
        return world.acct().of("b", rcpt=address)

    for domain, status in PERMANENT:
        (row,) = wait_for_len(functools.partial(bounces, rcpt[domain]), 1, 10, "b record")
        assert row["dsnStatus"].split()[0] == status, (domain, row)
        assert row["dsnAction"] == "failed"
    permanent_after = time.monotonic() - started
    # No MX, but an A record: the implicit MX (Postfix on 127.0.0.2) gets it.
    wait_for(
        lambda: [d for d in postfix_receiver.deliveries() if d.recipient == rcpt["nomx"]],
        15,
        "nomx.test delivered through its A record",
    )

    # Watch the temporary failures being retried.
    time.sleep(max(0.0, WATCH - (time.monotonic() - started)))
    acct = world.acct()
    for domain in ("servfail", "timeout"):
        assert acct.of("b", rcpt=rcpt[domain]) == [], f"{domain}: bounced before bounce-after"
        assert acct.of("d", rcpt=rcpt[domain]) == []
        queries = [q for q in world.dns.queries if q[1].rstrip(".") == f"{domain}.test"]
        assert len(queries) >= 2, f"{domain}.test asked only {len(queries)} times: not retried"
    for domain, _ in PERMANENT:
        assert len(acct.of("b", rcpt=rcpt[domain])) == 1
    assert len(acct.of("d", rcpt=rcpt["nomx"])) == 1
    # Null MX: not a single connection, and no address look-up at all (RFC 7505).
    assert syn_counter.syns(decoy) == []
    assert ("A", "nullmx.test") not in [(t, n.rstrip(".")) for t, n in world.dns.queries]
    # loop.test was not delivered to ourselves: Sluice received it once, from the injector.
    assert len(acct.of("r", rcpt=rcpt["loop"])) == 1
    print(f"T27: permanent DNS verdicts within {permanent_after:.1f}s")

    problems: list[str] = []
    # The deferral is visible in the accounting file, with 4.4.3, at each retry: t records
    # for the recipient, or tq records for its queue (PowerMTA's queue-level record).
    for domain in ("servfail", "timeout"):
        queue = f"{domain}.test/{{default}}"
        transient = acct.of("t", rcpt=rcpt[domain])
        transient += [r for r in acct.of("tq") if r["queue"] == queue]
        if len(transient) < 2:
            problems.append(f"{domain}: {len(transient)} t/tq records in {WATCH:.0f}s (want >= 2)")
        elif not all(r["dsnStatus"].startswith("4.4.3") for r in transient):
            problems.append(f"{domain}: t/tq records without 4.4.3: {transient}")

    # One DSN each for the permanent failures, to the sender (RFC 3464).
    try:
        dsns = wait_for_len(lambda: dsns_at(src_receiver), 3, 15, "DSNs")
    except AssertionError as exc:
        problems.append(f"DSNs: {exc}; found {len(dsns_at(src_receiver))}")
    else:
        by_rcpt = {r: d for d in dsns for r in d.final_recipients}
        if sorted(by_rcpt) != sorted(rcpt[d] for d, _ in PERMANENT) or len(dsns) != 3:
            problems.append(f"DSNs for {sorted(by_rcpt)} ({len(dsns)} DSNs)")
        for domain, status in PERMANENT:
            got = by_rcpt.get(rcpt[domain])
            if got is not None and got.statuses != [status]:
                problems.append(f"{domain}: DSN status {got.statuses}, want {status}")
    assert not problems, problems
