"""The issue-5 campaign: the seed's configuration against the Microsoft simulator, measured
against the fastest drain the simulator's budget allows. Used by test_shaping_e2e_campaign.py
(a smaller campaign) and bench/bench_shaping.py (20,000 messages).

The choice of simulator (``CAMPAIGN_SIM``), and why:

- **Budget model BUCKET, 1,200 messages an hour per source IP** (capacity 1,200, refilled at
  1,200/h). A rolling hourly budget would let a bursting sender drain ``n`` in
  ``floor((n - 1) / B)`` hours, a bound no smooth sender can approach (it is reached only by
  sending a whole hour's budget in one instant); the bucket's bound ``(n - B) / R`` is reached
  by any sender that keeps the bucket from overflowing.
- **Its rate is between the seed's backoff rate (1000/h) and its normal rate (5000/h).** At
  5000/h Sluice empties the bucket and earns ``421 RP-001``; the seed's rule then holds it at
  1000/h for an hour, during which the bucket gains 200 and never overflows (capacity 1,200),
  so no capacity is lost; back at 5000/h it spends those 200 and earns the next RP-001. On
  average Sluice sends at the simulator's 1,200/h, i.e. at the bound's pace. With a budget
  below 1000/h the seed's own backoff rate would keep earning RP-001 and, after 50 of them in
  an hour, the S3150 block; above 5000/h the seed's rules would never fire.
- What remains between Sluice and the bound is the end of the campaign (the last backoff
  may find little left to send, or leave the bucket's last 200 unspent) and the backoff
  rate's own accuracy. A refused recipient costs nothing: ``421`` closes the session, so it
  returns to the ready set without a retry delay (``Scope.SESSION``). On a model of both
  sides (exact rates, no protocol time) the end costs at most 3.8 % of the bound for any
  campaign of 6,000 to 20,000 messages (0.8 % at 20,000).
- The simulator's other defaults stay: 20 sessions per source IP (the seed's max-smtp-out),
  300 messages per minute (4.7.500; the seed's 83/min never reach it), 50 further deferrals
  within an hour of the first earn a 6-hour S3150 block.

The campaign goes through the seed's default VMTA for the injecting source
(``default-virtual-mta transactional``, 127.0.0.2): the marketing pool's ``bounce-after 2h``
for hotmail.com would expire most of a campaign that the budget stretches over 16 hours.

Public names: CAMPAIGN_SIM, CampaignResult, PhaseStats, run_campaign.
Raises: AssertionError (a time-out waiting for the receiver, with the daemon's stderr).
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

from tests.shaping_e2e.shaping_support import (
    MS_DOMAINS,
    SIM_FIRST_HOST,
    backoff_window,
    campaign_messages,
    real_rate,
    real_seconds,
    run_world,
    seed_config_text,
)

from sluice.sim import (
    TAG_BLOCKED,
    TAG_RATE_LIMIT,
    BudgetModel,
    MicrosoftParams,
    MicrosoftProfile,
    ReceiverSpec,
    Stats,
    fastest_drain_time,
)

__all__ = ["CAMPAIGN_SIM", "CampaignResult", "PhaseStats", "run_campaign"]

#: The simulator of the campaign (config time; scaled by 1 / time_scale when run).
CAMPAIGN_SIM = MicrosoftParams(hourly_budget=1200, budget_model=BudgetModel.BUCKET)
#: The campaign's source IP (the seed's transactional VMTA).
SOURCE_IP = "127.0.0.2"
#: The seed's rule for RP-001 (period in config seconds, cap, messages per hour).
RP001_PERIOD, RP001_CAP, RP001_PER_HOUR = 3600.0, 5, 1000
#: The seed's normal hotmail rate.
NORMAL_PER_HOUR = 5000
#: Real seconds after a burst's first refusal before its backoff limits are judged
#: (in-flight transactions finish; see test_shaping_e2e_backoff.py).
ALLOWANCE = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseStats:
    """One backoff of the campaign, at the receiver."""

    start: float
    replies: int  #: RP-001 replies of the burst that started it (before the next period)
    reaction: int  #: replies between the first of them and the drop to 5 sessions
    drop_ms: float
    messages: int  #: accepted in [start + ALLOWANCE, start + period)
    expected: float  #: what the backoff rate gives in that window
    max_sessions: int  #: sampled, in that window


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignResult:
    """What the campaign did (config-time durations are real ones × time_scale)."""

    messages: int
    time_scale: float
    delivered: int
    injected_in: float  #: real seconds the injection took
    drain_real: float  #: first to last acceptance at the receiver
    bound: float  #: fastest_drain_time(messages, CAMPAIGN_SIM), config seconds
    tags: dict[str, int]
    phases: tuple[PhaseStats, ...]
    bounces: int  #: accounting ``b`` records

    @property
    def drain(self) -> float:
        """The drain time in config seconds."""
        return self.drain_real * self.time_scale

    @property
    def over_bound(self) -> float:
        """drain / bound - 1."""
        return self.drain / self.bound - 1.0

    @property
    def s3150(self) -> int:
        return self.tags.get(TAG_BLOCKED, 0)

    @property
    def backoff_rate_error(self) -> float:
        """Messages sent in the backoff windows against the backoff rate, minus 1 (full
        windows only)."""
        sent = sum(p.messages for p in self.phases)
        expected = sum(p.expected for p in self.phases)
        return sent / expected - 1.0 if expected else math.nan

    def report(self) -> str:
        lines = [
            f"campaign: {self.messages} messages, seed config, Microsoft simulator "
            f"(bucket {CAMPAIGN_SIM.hourly_budget}/h), time x{self.time_scale:g}",
            f"  delivered {self.delivered}, bounced {self.bounces}, "
            f"injected in {self.injected_in:.1f}s real",
            f"  drain time {self.drain / 3600:.3f} h (config) vs bound {self.bound / 3600:.3f} h:"
            f" {self.over_bound:+.2%} ({self.drain_real:.1f}s real)",
            f"  receiver refusals {self.tags or '{}'}; S3150 blocks: {self.s3150}",
            f"  backoffs: {len(self.phases)}; rate in backoff vs 1000/h: "
            f"{self.backoff_rate_error:+.2%}",
        ]
        for i, p in enumerate(self.phases):
            lines.append(
                f"    #{i + 1}: {p.replies} RP-001 replies, reaction {p.reaction} replies / "
                f"{p.drop_ms:.0f} ms to <=5 sessions; {p.messages} msgs in window "
                f"(rate allows {p.expected:.0f}); max {p.max_sessions} sessions"
            )
        return "\n".join(lines)


def _phases(st: Stats, time_scale: float, end: float) -> tuple[PhaseStats, ...]:
    """Each RP-001 burst that opened a backoff: a refusal at least one period after the
    previous burst's first (within a period the rule only extends the backoff)."""
    period = real_seconds(RP001_PERIOD, time_scale)
    rate = real_rate(RP001_PER_HOUR, time_scale)
    refusals = [ev.at for ev in st.events if ev.ip == SOURCE_IP and ev.tag == TAG_RATE_LIMIT]
    starts: list[float] = []
    for at in refusals:
        if not starts or at >= starts[-1] + period:
            starts.append(at)
    times = st.source(SOURCE_IP).message_times
    out = []
    for start in starts:
        a, b = start + ALLOWANCE, start + period
        if b > end:
            continue  # the campaign ended inside it: not a full window
        window = backoff_window(st, SOURCE_IP, TAG_RATE_LIMIT, RP001_CAP, after=start)
        sessions = [s.by_ip.get(SOURCE_IP, 0) for s in st.samples if a <= s.at < b]
        out.append(
            PhaseStats(
                start=start,
                replies=sum(1 for at in refusals if start <= at < start + period / 2),
                reaction=window.replies_before_drop,
                drop_ms=(window.dropped_at - start) * 1000,
                messages=bisect.bisect_left(times, b) - bisect.bisect_left(times, a),
                expected=(b - a) * rate,
                max_sessions=max(sessions, default=0),
            )
        )
    return tuple(out)


def _bounces(path: Path) -> int:
    if not path.exists():
        return 0
    text = path.read_text("utf-8")
    return sum(1 for row in csv.DictReader(io.StringIO(text)) if row.get("type") == "b")


def run_campaign(
    workdir: Path, messages: int, *, time_scale: float, concurrency: int = 8
) -> CampaignResult:
    """Run the campaign and measure it; waits at most twice the bound (plus a minute)."""
    spec = ReceiverSpec(
        name="ms",
        host=SIM_FIRST_HOST,
        profile=MicrosoftProfile(CAMPAIGN_SIM.scaled(1 / time_scale)),
        hostname="mx.ms.sim.test",
        domains=MS_DOMAINS,
    )
    bound = fastest_drain_time(messages, CAMPAIGN_SIM)
    timeout = 2 * real_seconds(bound, time_scale) + 60

    def config(w: Path, listener: tuple[str, int], dns: tuple[str, int], port: int) -> str:
        return seed_config_text(w, listener=listener, dns=dns, smtp_port=port)

    with run_world(workdir, [spec], config, time_scale=time_scale) as world:
        started = time.monotonic()
        injection = world.inject(
            campaign_messages(messages, MS_DOMAINS, "transactional", prefix="c"),
            concurrency=concurrency,
        )
        injection.join(timeout)
        injected_in = time.monotonic() - started
        st = world.wait_for(
            "ms",
            lambda s: s.source(SOURCE_IP).messages >= messages or s.total.tag(TAG_BLOCKED) > 0,
            timeout,
            f"{messages} messages",
            interval=0.5,
        )
        time.sleep(0.5)  # the accounting file's last batch
    src = st.source(SOURCE_IP)
    first, last = src.first_message_at, src.last_message_at
    assert first is not None
    assert last is not None
    return CampaignResult(
        messages=messages,
        time_scale=time_scale,
        delivered=src.messages,
        injected_in=injected_in,
        drain_real=last - first,
        bound=bound,
        tags=dict(st.total.tags),
        phases=_phases(st, time_scale, last),
        bounces=_bounces(workdir / "acct.csv"),
    )
