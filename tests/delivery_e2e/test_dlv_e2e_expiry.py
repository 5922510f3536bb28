"""Retries over time through the real daemon, with durations scaled down to seconds:
expiry (``bounce-after``) of mail a destination always defers, and a ``kill -9`` with deferred
mail — the recipients keep their retry schedule (no stampede at restart) and are delivered
later. (Four simulated days on the fake clock are tested at the scheduler level, tests/sched.)
"""

from __future__ import annotations

import time

import pytest
from tests.delivery_e2e.dlv_e2e_support import (
    SynCounter,
    World,
    dsns_at,
    wait_for,
    wait_for_len,
)
from tests.e2e.dnszones import RECEIVER_ADDRS
from tests.e2e.postfix_peer import PostfixReceiver

pytestmark = pytest.mark.interop

REJ = RECEIVER_ADDRS["rej"]
BOUNCE_AFTER = 10.0
EXPIRING = 3
RESTART_MESSAGES = 20
RESTART_RETRY = 8.0
#: The scheduler spreads each retry delay over ± 10 % (docs/scheduler.md).
JITTER = 0.1


def test_expiry_bounces_at_bounce_after_with_a_dsn(
    world: World, src_receiver: PostfixReceiver
) -> None:
    world.make_sink(REJ, soft_reject=("RCPT",), dump=False)
    world.start_sluice(
        domains={"*": {"retry-after": "2s", "bounce-after": f"{BOUNCE_AFTER:.0f}s"}},
    )
    msgs = [world.ledger.make([f"late{i}@rej.test"]) for i in range(EXPIRING)]
    assert world.inject(msgs).acked == EXPIRING
    acked = min(world.ledger.replies(m.seq)[-1][1] for m in msgs)

    bounces = wait_for_len(
        lambda: world.acct().of("b"), EXPIRING, BOUNCE_AFTER + 10, "expiry bounces"
    )
    after = time.time() - acked
    acct = world.acct()
    deferrals = {m.recipients[0]: len(acct.of("t", rcpt=m.recipients[0])) for m in msgs}
    print(f"expiry: bounced {after:.1f}s after injection; deferrals {deferrals}")
    # Not before bounce-after (the intake's arrival time precedes our ack by a hair) ...
    assert after >= BOUNCE_AFTER - 0.5
    # ... and not a whole retry interval late.
    assert after <= BOUNCE_AFTER + 3.0
    assert all(n >= 3 for n in deferrals.values()), deferrals
    mine = {m.recipients[0] for m in msgs}
    assert len([r for r in acct.final() if r["rcpt"] in mine]) == EXPIRING

    problems: list[str] = []
    for row in bounces:
        got = (row["bounceCat"], row["dsnStatus"].split(" ")[0], row["dsnAction"])
        if got != ("message-expired", "4.4.7", "failed"):
            problems.append(f"b record of {row['rcpt']}: {got} ({row['dsnDiag']})")
    try:
        dsns = wait_for_len(lambda: dsns_at(src_receiver), EXPIRING, 15, "DSNs")
    except AssertionError as exc:
        problems.append(f"DSNs: {exc}; found {len(dsns_at(src_receiver))}")
    else:
        rcpts = sorted(r for d in dsns for r in d.final_recipients)
        if rcpts != sorted(m.recipients[0] for m in msgs):
            problems.append(f"DSNs for {rcpts}")
        for dsn in dsns:
            if dsn.statuses != ["4.4.7"] or dsn.per_recipient[0].get("action") != "failed":
                problems.append(f"DSN {dsn.final_recipients}: {dsn.per_recipient}")
    assert not problems, problems


def test_kill9_with_deferred_mail_keeps_the_retry_schedule(
    world: World, syn_counter: SynCounter
) -> None:
    refusing = world.make_sink(REJ, soft_reject=("RCPT",), dump=False)
    sluice = world.start_sluice(
        domains={"*": {"retry-after": f"{RESTART_RETRY:.0f}s", "bounce-after": "10m"}},
    )
    msgs = [world.ledger.make([f"k{i}@rej.test"]) for i in range(RESTART_MESSAGES)]
    assert world.inject(msgs, per_connection=10).acked == RESTART_MESSAGES
    wait_for(
        lambda: len({r["rcpt"] for r in world.acct().of("t")}) == RESTART_MESSAGES,
        15,
        "every recipient deferred once",
    )
    deferred_at = time.monotonic()

    sluice.kill9()
    # The receiver is fixed while Sluice is down (its start-up probes are not Sluice's SYNs).
    refusing.stop()
    sink = world.make_sink(REJ)
    syn_counter.barrier()  # the new sink's readiness probes are counted before restarted_at
    restarted_at = time.monotonic()
    sluice.start()
    sluice.wait_for_stderr(rf"recovered: {RESTART_MESSAGES} messages", 5)

    first_due = deferred_at + RESTART_RETRY * (1 - JITTER)
    seen: dict[int, float] = {}

    def all_delivered() -> bool:
        now = time.monotonic()
        for d in sink.deliveries():
            if d.seq is not None:
                seen.setdefault(d.seq, now)
        return len(seen) >= RESTART_MESSAGES

    wait_for(all_delivered, RESTART_RETRY + 15, "delivery after the restart", interval=0.05)
    early = syn_counter.syns(REJ, world.port, since=restarted_at, until=first_due - 0.5)
    first, last = min(seen.values()) - deferred_at, max(seen.values()) - deferred_at
    print(
        f"restart: back in {restarted_at - deferred_at:.1f}s; delivered {first:.1f}s to"
        f" {last:.1f}s after the deferral (retry-after {RESTART_RETRY:.0f}s)"
    )
    assert early == [], "connections before the retry was due: a stampede at restart"
    assert first >= RESTART_RETRY * (1 - JITTER) - 0.5
    assert last <= RESTART_RETRY * (1 + JITTER) + 3.0
    report = world.ledger.check(sink.deliveries())
    assert (report.acked_lost, report.dup, report.phantom) == (0, 0, 0)
    finals = wait_for_len(lambda: world.acct().final(), RESTART_MESSAGES, 10, "d records")
    assert sorted(r["rcpt"] for r in finals) == sorted(m.recipients[0] for m in msgs)
