"""The seed's backoff rules on real sockets, counted by the Microsoft simulator.

The seed's configuration runs unchanged on a clock 180× fast: ``max-msg-per-hour 5000`` is
250 msgs/s, ``421 RP-001 *, 1h, 5, 1000`` is 20 s at 5 connections and 50 msgs/s, and
``421 4.3.2 *, 45m, 2, 500`` is 15 s at 2 connections and 25 msgs/s. The simulator runs on
the real clock with its durations divided by 180, and answers each final dot 50 ms late, so
that 250 msgs/s need about 13 sessions: the drop to the backoff cap is visible.

What is allowed after the first matching reply, and why: transactions Sluice handed out
before it read that reply are already on the wire; each finishes (or earns its own 421 from
the simulator) and its connection then closes. So the limits are judged from the first
refusal plus ``ALLOWANCE`` = the 50 ms final-dot delay + 0.5 s for Sluice to read the reply,
close the surplus sessions and for the QUIT/221 exchange on a loaded 2-core machine; until
the first refusal plus the rule's period. In that window the receiver must count zero
samples above the connection cap and no more messages than ``1 + (W + JITTER) · rate``
(GCRA, burst 1, ``docs/shaping.md``; ``JITTER`` 0.1 s covers the receiver's millisecond
clock and the transit time, which move an acceptance against the send it follows). The
replies received between the first refusal and the drop to the cap (the reaction) are
counted from the simulator's event timeline and its 100 ms samples, and may be at most one
per open connection (a rate-limited queue hands one transaction per connection at a time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.shaping_e2e.shaping_support import (
    MS_DOMAINS,
    SIM_FIRST_HOST,
    World,
    campaign_messages,
    judge_backoff,
    real_rate,
    real_seconds,
    run_world,
    seed_config_text,
)

from sluice.sim import (
    TAG_BLOCKED,
    BudgetModel,
    Faults,
    MicrosoftParams,
    MicrosoftProfile,
    ReceiverSpec,
    Stats,
)

pytestmark = pytest.mark.interop

SCALE = 180.0
TX_IP, M1_IP, M2_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
SLOW_DOT = 0.05
ALLOWANCE = SLOW_DOT + 0.5
JITTER = 0.1
#: The seed's hotmail limits.
SEED_MAX_SMTP_OUT = 20
SEED_PER_HOUR = 5000


def _seed(w: Path, listener: tuple[str, int], dns: tuple[str, int], port: int) -> str:
    return seed_config_text(w, listener=listener, dns=dns, smtp_port=port)


def _microsoft(params: MicrosoftParams, faults: Faults | None = None) -> ReceiverSpec:
    return ReceiverSpec(
        name="ms",
        host=SIM_FIRST_HOST,
        profile=MicrosoftProfile(params.scaled(1 / SCALE)),
        faults=faults,
        hostname="mx.ms.sim.test",
        domains=MS_DOMAINS,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One of the seed's inline rules and a simulator that provokes it (config time)."""

    tag: str
    period: float
    cap: int
    per_hour: int
    sim: MicrosoftParams
    messages: int
    #: Real seconds to watch after the period for the return to normal.
    after: float


RULES = {
    # A budget of 100 per source IP refilled at 4,500/h: the seed's 5000/h empties it in
    # 0.2 h (4 s), the backoff's 1000/h fits it, and after the hour 5000/h is back for
    # another 0.2 h before the next RP-001.
    "RP-001": Rule(
        tag="RP-001",
        period=3600.0,
        cap=5,
        per_hour=1000,
        sim=MicrosoftParams(hourly_budget=100, budget_window=80.0, budget_model=BudgetModel.BUCKET),
        messages=4000,
        after=4.0,
    ),
    # No budget to speak of, but at most 6 sessions per source IP: the seventh gets
    # 421 4.3.2 while Sluice grows towards the ~13 sessions 250 msgs/s need.
    "4.3.2": Rule(
        tag="4.3.2",
        period=2700.0,
        cap=2,
        per_hour=500,
        sim=MicrosoftParams(hourly_budget=10**9, throttle_rate=None, max_connections=6),
        messages=1600,
        after=2.0,
    ),
}


def _watch_backoff(world: World, rule: Rule) -> Stats:
    """Wait for the first refusal of the rule, then for the period and ``rule.after``."""
    st = world.wait_for(
        "ms", lambda s: any(ev.tag == rule.tag for ev in s.events), 30, f"a {rule.tag}"
    )
    first = next(ev.at for ev in st.events if ev.tag == rule.tag)
    until = first + real_seconds(rule.period, SCALE) + rule.after
    return world.wait_for("ms", lambda s: s.taken_at >= until, 60, "the end of the backoff")


@pytest.mark.parametrize("tag", list(RULES))
def test_backoff_on_first_matching_reply(tmp_path: Path, tag: str) -> None:
    rule = RULES[tag]
    rate_b = real_rate(rule.per_hour, SCALE)
    period = real_seconds(rule.period, SCALE)
    with run_world(
        tmp_path,
        [_microsoft(rule.sim, Faults(final_reply_delay=SLOW_DOT))],
        _seed,
        time_scale=SCALE,
    ) as world:
        campaign = world.inject(campaign_messages(rule.messages, MS_DOMAINS, "transactional"))
        st = _watch_backoff(world, rule)
        campaign.join(30)
        stderr = world.sluice.stderr_text()

    j = judge_backoff(
        st,
        TX_IP,
        tag,
        cap=rule.cap,
        rate=rate_b,
        period=period,
        allowance=ALLOWANCE,
        jitter=JITTER,
        refusal_means_over_cap=tag == "4.3.2",
    )
    print(f"\n[{tag}] {j.summary()}")
    # The daemon says so, with the reply that caused it and the rule's period.
    logged = re.search(
        rf"queue hotmail\.com/transactional: mode backoff for (\d+)s: 421 .*{re.escape(tag)}",
        stderr,
    )
    assert logged is not None, stderr[-3000:]
    assert abs(int(logged.group(1)) - rule.period) <= 60
    # Before the rule fired the queue was above the backoff cap (the drop is real): sampled
    # for RP-001; for 4.3.2 the refusal itself says max_connections (6) were open.
    opened = rule.sim.max_connections if tag == "4.3.2" else j.reaction.open_at_start
    assert opened > rule.cap, j.summary()
    # Reaction: at most one reply per session that was open when the first came.
    assert j.reaction.replies_before_drop <= SEED_MAX_SMTP_OUT, j.summary()
    # Zero requests beyond the backoff's caps until its period ends.
    assert j.samples_over_cap == (), j.summary()
    assert j.messages <= j.allowed, j.summary()
    assert j.busiest_second <= j.allowed_per_second, j.summary()
    assert j.excess_requests == 0
    # The backoff rate is what held the queue (not an idle queue): it sent at that rate.
    span = j.window[1] - j.window[0]
    assert j.messages >= 0.9 * span * rate_b, j.summary()
    # Then back to normal: more sessions than the backoff cap, not before the period ended.
    assert j.resumed_at is not None, j.summary()
    assert j.resumed_at >= j.start + period - ALLOWANCE, j.summary()
    assert j.resumed_at <= j.burst_end + period + 2.0, j.summary()
    if tag == "RP-001":
        assert j.peak_after > rule.cap, j.summary()
    assert re.search(r"queue hotmail\.com/transactional: mode normal", stderr), stderr[-3000:]
    if tag == "RP-001":
        # The normal rate is back too (well above the backoff's, up to 5000/h).
        assert j.rate_after >= 2 * rate_b, j.summary()
        assert j.rate_after <= real_rate(SEED_PER_HOUR, SCALE) * 1.03 + 1, j.summary()
    assert st.source(TX_IP).tag(TAG_BLOCKED) == 0


# -- transactional mail while the marketing pool backs off -------------------------------------

#: Password resets per real second (200/h of config time: nothing near any limit).
RESET_SPEED = 10.0
BASELINE_RESETS = 20
RESETS = 100
#: A reset stuck behind marketing would wait for the backoff (20 s) or for the pool's
#: backlog at 50 msgs/s; one that flows waits for nothing but the protocol. The bound is a
#: twentieth of the backoff period, far from both.
MAX_RESET_LATENCY = real_seconds(3600, SCALE) / 20


def _latencies(
    entries: list[tuple[str, float]], prefix: str, started: float, n: int
) -> list[float]:
    """Receiver time minus scheduled injection time for the resets ``prefix.SEQ@…``."""
    out: dict[int, float] = {}
    for rcpt, at in entries:
        local = rcpt.partition("@")[0]
        if local.startswith(prefix + "."):
            seq = int(local.rpartition(".")[2])
            out[seq] = at - (started + seq / RESET_SPEED)
    assert sorted(out) == list(range(n)), f"{prefix}: {n - len(out)} missing"
    return [out[i] for i in range(n)]


def test_transactional_flows_while_marketing_backs_off(tmp_path: Path) -> None:
    """The marketing pool's two hotmail queues earn 421 RP-001 and back off (5 sessions,
    1000/h for 1h = 20 s); password resets injected meanwhile through X-Virtual-MTA:
    transactional leave from 127.0.0.2 at their own pace, each within a twentieth of the
    backoff period, as before the campaign started."""
    # Every source IP: a bucket of 20 refilled at 1,200/h. Marketing's 5000/h empties it at
    # once; the resets (200/h) never come near it; the backoff's 1000/h fits the refill.
    sim = MicrosoftParams(hourly_budget=20, budget_window=60.0, budget_model=BudgetModel.BUCKET)
    period = real_seconds(3600, SCALE)
    with run_world(tmp_path, [_microsoft(sim)], _seed, time_scale=SCALE, record=True) as world:
        base = world.inject(
            campaign_messages(BASELINE_RESETS, MS_DOMAINS, "transactional", prefix="base"),
            concurrency=2,
            speed=RESET_SPEED,
        )
        base.join(30)
        marketing = world.inject(
            campaign_messages(2400, MS_DOMAINS, "marketing", prefix="news", first_seq=0),
            concurrency=6,
        )
        st = world.wait_for(
            "ms",
            lambda s: all(s.source(ip).tag("RP-001") for ip in (M1_IP, M2_IP)),
            30,
            "RP-001 to both marketing IPs",
        )
        t_backoff = max(
            next(ev.at for ev in st.events if ev.ip == ip and ev.tag == "RP-001")
            for ip in (M1_IP, M2_IP)
        )
        resets = world.inject(
            campaign_messages(RESETS, MS_DOMAINS, "transactional", prefix="reset"),
            concurrency=2,
            speed=RESET_SPEED,
        )
        world.wait_for(
            "ms",
            lambda s: s.source(TX_IP).messages >= BASELINE_RESETS + RESETS,
            30,
            "every reset",
        )
        resets.join(10)
        marketing.join(30)
        st = world.stats("ms")
        ledger = world.sims.ledger("ms")
        stderr = world.sluice.stderr_text()

    entries = [(e.recipients[0], e.at) for e in ledger.entries if e.source_ip == TX_IP]
    base_lat = _latencies(entries, "base", base.stats.started_at, BASELINE_RESETS)
    lat = _latencies(entries, "reset", resets.stats.started_at, RESETS)
    times = sorted(at for rcpt, at in entries if rcpt.startswith("reset."))
    reset_rate = (len(times) - 1) / (times[-1] - times[0])
    print(
        f"\n[transactional] resets during marketing backoff: rate {reset_rate:.2f}/s "
        f"(injected {RESET_SPEED:g}/s), latency median {sorted(lat)[len(lat) // 2] * 1000:.0f}"
        f" ms, max {max(lat) * 1000:.0f} ms; before the campaign: median "
        f"{sorted(base_lat)[len(base_lat) // 2] * 1000:.0f} ms, max {max(base_lat) * 1000:.0f} ms"
    )
    # Both marketing queues were in backoff, and stayed so while every reset was delivered.
    for queue in ("marketing-1", "marketing-2"):
        assert re.search(rf"queue hotmail\.com/{queue}: mode backoff for \d+s: 421 ", stderr)
    assert times[-1] < t_backoff + period - ALLOWANCE, "resets outlasted the backoff"
    for ip in (M1_IP, M2_IP):
        during = [s.by_ip.get(ip, 0) for s in st.samples if t_backoff + 1 <= s.at <= times[-1]]
        assert during, ip
        assert max(during) <= 5, (ip, max(during))
    # The transactional queue never backed off, was never refused, kept its pace.
    assert "hotmail.com/transactional: mode backoff" not in stderr
    assert dict(st.source(TX_IP).tags) == {}
    assert abs(reset_rate / RESET_SPEED - 1) <= 0.05, reset_rate
    assert max(lat) < MAX_RESET_LATENCY, lat
    assert max(base_lat) < MAX_RESET_LATENCY, base_lat
    assert st.total.tag(TAG_BLOCKED) == 0
