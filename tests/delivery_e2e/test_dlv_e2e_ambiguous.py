"""T28 (scaled) through the real daemon: ambiguous delivery — no loss, bounded duplicates.

drop.test's smtp-sink hangs up right after the final dot; slow.test's answers the dot only
after Sluice's ``smtp-data-termination-timeout``. Both hold the message (the sink dumps it),
so every such attempt is *ambiguous*: Sluice must retry it (at-least-once), warn that it may
be delivered twice, and never count it as delivered. After the sinks are switched to normal,
each message is delivered (≥ 1 copy), exactly once more, and the duplicates are bounded by
the ambiguous attempts — one warning per attempt. And the unambiguous case: a 250 followed
by a cut is a delivery, never resent.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from tests.delivery_e2e.dlv_e2e_support import World, wait_for
from tests.e2e.dnszones import RECEIVER_ADDRS
from tests.e2e.peers import SmtpSink

pytestmark = pytest.mark.interop

DROP, SLOW = RECEIVER_ADDRS["drop"], RECEIVER_ADDRS["slow"]
PER_DOMAIN = 40
#: Sluice waits this long for the reply to the dot; slow.test answers after SLOW_REPLY.
DATA_TIMEOUT = 2
SLOW_REPLY = 5
#: How long the faulty sinks stay faulty.
FAULTY_FOR = 8.0
_WARNING = re.compile(r"^.*(?:possible duplicate|may be delivered twice).*$", re.MULTILINE)


def _seqs(sink: SmtpSink, start: int = 0) -> Counter[int]:
    return Counter(d.seq for d in sink.deliveries()[start:] if d.seq is not None)


def test_t28_ambiguous_attempts_are_retried_and_bounded(world: World) -> None:
    faulty = {
        "drop": world.make_sink(DROP, hangup=(".",)),
        "slow": world.make_sink(SLOW, delays=(f".:{SLOW_REPLY}",)),
    }
    sluice = world.start_sluice(
        domains={
            "*": {
                "retry-after": "1s",
                "bounce-after": "10m",
                "smtp-data-termination-timeout": f"{DATA_TIMEOUT}s",
            }
        }
    )
    make = world.ledger.make
    msgs = [make([f"d{i}@drop.test"]) for i in range(PER_DOMAIN)]
    msgs += [make([f"s{i}@slow.test"]) for i in range(PER_DOMAIN)]
    assert world.inject(msgs, concurrency=4, per_connection=20).acked == len(msgs)
    time.sleep(FAULTY_FOR)  # the faulty phase: every attempt is ambiguous
    for sink in faulty.values():
        sink.stop()
    # The sinks hold every message whose dot they read: one per ambiguous attempt.
    ambiguous = {name: _seqs(sink) for name, sink in faulty.items()}
    cut = {name: len(sink.deliveries()) for name, sink in faulty.items()}
    assert all(sum(a.values()) > 0 for a in ambiguous.values()), ambiguous

    # Normal sinks on the same addresses (their dumps continue the faulty ones' files).
    sinks = {"drop": world.make_sink(DROP), "slow": world.make_sink(SLOW)}
    wait_for(
        lambda: all(len(_seqs(sinks[n], cut[n])) == PER_DOMAIN for n in sinks),
        60,
        "every message delivered after the switch",
    )
    time.sleep(1.0)  # a wrong resend would show up now
    report = world.ledger.check([d for s in sinks.values() for d in s.deliveries()])
    assert (report.acked_lost, report.phantom, report.truncated) == (0, 0, 0)
    for name, sink in sinks.items():
        after = _seqs(sink, cut[name])
        # Exactly one clean delivery per message after the switch: a 250 is never resent.
        assert set(after.values()) == {1}, (name, after)
        for seq, n in (ambiguous[name] + after).items():
            assert n - 1 <= ambiguous[name][seq], (name, seq, n)
    assert report.dup == sum(sum(a.values()) for a in ambiguous.values())

    # One "possible duplicate" warning per ambiguous attempt.
    warnings = _WARNING.findall(sluice.stderr_text())
    counted = {n: sum(1 for w in warnings if f"{n}.test" in w) for n in sinks}
    print(
        f"T28: ambiguous attempts drop={sum(ambiguous['drop'].values())}"
        f" slow={sum(ambiguous['slow'].values())}; warnings {counted}; dup={report.dup}"
    )
    # One more per domain at most: a dot Sluice sent just as the faulty sink was stopped,
    # before the sink read it, is ambiguous to Sluice (the link died after the dot left)
    # but left no copy at the sink (seen once in CI: slow 89 warnings, 88 copies).
    for n in sinks:
        assert sum(ambiguous[n].values()) <= counted[n] <= sum(ambiguous[n].values()) + 1, (
            n,
            counted,
        )


def test_250_then_a_cut_is_delivered_and_never_resent(world: World) -> None:
    """The receiver answers 250 to the dot, then hangs up instead of answering QUIT or RSET:
    the message is delivered (test-plan §4: a failed QUIT is not a failed delivery)."""
    sink = world.make_sink(RECEIVER_ADDRS["sink"], hangup=("QUIT", "RSET"))
    sluice = world.start_sluice(
        domains={"*": {"retry-after": "1s", "max-msg-per-connection": 3}},
    )
    msgs = [world.ledger.make([f"q{i}@sink.test"]) for i in range(20)]
    assert world.inject(msgs, per_connection=20).acked == len(msgs)
    wait_for(lambda: len(sink.deliveries()) >= len(msgs), 20, "20 deliveries")
    wait_for(lambda: len(world.acct().final()) >= len(msgs), 10, "20 d records")
    time.sleep(1.5)  # past a retry interval: a wrong resend would have happened by now
    report = world.ledger.check(sink.deliveries())
    assert (report.acked_lost, report.dup, report.phantom) == (0, 0, 0)
    assert report.delivered == len(msgs)
    acct = world.acct()
    assert sorted(r["rcpt"] for r in acct.final()) == sorted(m.recipients[0] for m in msgs)
    assert {r["type"] for r in acct.final()} == {"d"}
    assert acct.of("t") == []
    assert _WARNING.findall(sluice.stderr_text()) == []
