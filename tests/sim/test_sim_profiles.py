"""The simulators' decision logic on a fake clock: budgets, caps, throttles, blocks, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.sim import (
    TAG_BLOCKED,
    TAG_BUSY,
    TAG_CONNECTIONS,
    TAG_RATE_LIMIT,
    BudgetModel,
    GmailParams,
    GmailProfile,
    MicrosoftParams,
    MicrosoftProfile,
    PlainProfile,
    Refusal,
    RollingWindow,
    Stage,
    TokenBucket,
    YahooParams,
    YahooProfile,
    fastest_drain_time,
    greedy_drain_time,
    make_profile,
)

IP = "127.0.0.3"
OTHER = "127.0.0.4"


def send(profile: MicrosoftProfile | GmailProfile | YahooProfile, now: float) -> Refusal | None:
    """One one-recipient message from IP at ``now``: RCPT, then accepted at once."""
    r = profile.on_rcpt(IP, now, first=True)
    if r is None:
        profile.on_accept(IP, now)
    return r


def ms(**kw: object) -> MicrosoftProfile:
    return MicrosoftProfile(MicrosoftParams(**kw))  # type: ignore[arg-type]


# --- Microsoft: the hourly budget -------------------------------------------------------


def test_budget_exhaustion_gives_rp001_at_exactly_the_budget() -> None:
    p = ms(hourly_budget=10, throttle_rate=None)
    for i in range(10):
        assert send(p, 100.0 + i) is None, i
    r = send(p, 110.0)
    assert r is not None
    assert r.tag == TAG_RATE_LIMIT
    assert r.reply.code == 421
    wire = r.reply.to_bytes()
    assert wire.startswith(b"421 RP-001 ")  # what the seed's "421 RP-001 *" rule matches
    assert IP.encode() in wire
    # Another source has its own budget.
    assert p.on_rcpt(OTHER, 110.0, first=True) is None


def test_rolling_hour_frees_slots_one_by_one() -> None:
    p = ms(hourly_budget=3, throttle_rate=None, block_after=100)
    for t in (0.0, 10.0, 20.0):
        assert send(p, t) is None
    assert send(p, 3599.0) is not None
    assert send(p, 3600.0) is None  # the message of t=0 left the window at 3600 exactly
    assert send(p, 3605.0) is not None
    assert send(p, 3610.0) is None


def test_later_recipients_of_a_message_do_not_count_again() -> None:
    p = ms(hourly_budget=1, throttle_rate=None)
    assert p.on_rcpt(IP, 0.0, first=True) is None
    for _ in range(5):
        assert p.on_rcpt(IP, 0.0, first=False) is None
    p.on_accept(IP, 0.0)
    assert p.state(IP, 1.0).budget_used == 1


def test_reservations_stop_concurrent_transactions_overshooting() -> None:
    p = ms(hourly_budget=3, throttle_rate=None)
    held = [p.on_rcpt(IP, 0.0, first=True) for _ in range(3)]
    assert held == [None, None, None]
    refused = p.on_rcpt(IP, 0.0, first=True)
    assert refused is not None
    assert refused.tag == TAG_RATE_LIMIT
    p.on_abort(IP, 1.0)  # one transaction was reset: its slot comes back
    assert p.on_rcpt(IP, 1.0, first=True) is None


def test_token_bucket_budget_refills_smoothly() -> None:
    p = ms(hourly_budget=4, budget_window=40.0, budget_model=BudgetModel.BUCKET, throttle_rate=None)
    for _ in range(4):
        assert send(p, 0.0) is None
    assert send(p, 0.0) is not None
    assert send(p, 9.9) is not None
    assert send(p, 10.0) is None  # one token per 10 s
    assert send(p, 15.0) is not None


# --- Microsoft: connections, throttle, block ----------------------------------------------


def test_more_than_n_connections_get_432() -> None:
    p = ms(max_connections=2)
    assert p.on_connect(IP, 0.0) is None
    assert p.on_connect(IP, 0.0) is None
    r = p.on_connect(IP, 0.0)
    assert r is not None
    assert r.tag == TAG_CONNECTIONS
    assert (
        r.reply.to_bytes() == b"421 4.3.2 Service not available, closing transmission channel\r\n"
    )
    assert p.on_connect(OTHER, 0.0) is None  # per source IP
    p.on_disconnect(IP, 1.0)
    assert p.on_connect(IP, 1.0) is None
    assert p.state(IP, 1.0).connections == 2


def test_connect_stage_is_configurable() -> None:
    assert ms().connect_stage is Stage.GREETING
    assert ms(connect_stage=Stage.EHLO).connect_stage is Stage.EHLO


def test_per_minute_throttle_gives_4_7_500() -> None:
    p = ms(hourly_budget=1000, throttle_rate=5, throttle_window=60.0)
    for i in range(5):
        assert send(p, float(i)) is None
    r = send(p, 5.0)
    assert r is not None
    assert r.tag == TAG_BUSY
    assert r.reply.to_bytes() == (
        b"451 4.7.500 Server busy. Please try again later from [127.0.0.3]. (S77)\r\n"
    )
    assert send(p, 60.0) is None  # the first one left the minute


def test_continued_sending_while_deferred_earns_s3150_and_it_expires() -> None:
    p = ms(
        hourly_budget=2,
        throttle_rate=None,
        block_after=3,
        deferral_period=100.0,
        block_duration=500.0,
    )
    assert send(p, 0.0) is None
    assert send(p, 0.0) is None
    first = send(p, 1.0)
    assert first is not None
    assert first.tag == TAG_RATE_LIMIT
    assert p.state(IP, 1.0).deferred_since == 1.0
    for t in (2.0, 3.0, 4.0):  # three more deferrals: not yet more than block_after
        r = send(p, t)
        assert r is not None
        assert r.tag == TAG_RATE_LIMIT
    assert p.state(IP, 4.0).strikes == 3
    assert p.state(IP, 4.0).blocked_until is None
    r = send(p, 5.0)  # the fourth further deferral earns the block (it still says RP-001)
    assert r is not None
    assert r.tag == TAG_RATE_LIMIT
    assert p.state(IP, 5.0).blocked_until == 505.0
    blocked = p.on_rcpt(IP, 6.0, first=True)
    assert blocked is not None
    assert blocked.tag == TAG_BLOCKED
    assert not blocked.deferral
    wire = blocked.reply.to_bytes()
    assert wire.startswith(b"550 5.7.1 Unfortunately, messages from [127.0.0.3] weren't sent.")
    assert b"part of their network is on our block list (S3150)" in wire
    # Every recipient is refused while blocked, even within a held message.
    blocked2 = p.on_rcpt(IP, 504.9, first=False)
    assert blocked2 is not None
    assert blocked2.tag == TAG_BLOCKED
    assert p.on_rcpt(OTHER, 10.0, first=True) is None  # other sources are not blocked
    # The block expires; the budget (rolling hour) is still spent until 3600.
    r = send(p, 505.0)
    assert r is not None
    assert r.tag == TAG_RATE_LIMIT
    assert send(p, 3600.0) is None


def test_a_sender_that_slows_down_is_not_blocked() -> None:
    # After its first RP-001 the sender waits for the window instead of hammering.
    p = ms(hourly_budget=5, throttle_rate=None, block_after=2, deferral_period=3600.0)
    for _ in range(5):
        assert send(p, 0.0) is None
    assert send(p, 10.0) is not None
    assert send(p, 20.0) is not None
    for t in range(3600, 3605):
        assert send(p, float(t)) is None
    assert p.state(IP, 3605.0).blocked_until is None


def test_deferral_period_expiry_resets_the_strikes() -> None:
    p = ms(hourly_budget=1, throttle_rate=None, block_after=2, deferral_period=10.0)
    assert send(p, 0.0) is None
    for t in (1.0, 2.0, 3.0):  # first + 2 further: not more than 2
        assert send(p, t) is not None
    assert send(p, 11.5) is not None  # a new period starts (strikes reset)
    assert send(p, 12.0) is not None
    assert p.state(IP, 12.0).strikes == 1
    assert p.state(IP, 12.0).blocked_until is None


def test_concurrency_refusals_count_as_deferrals() -> None:
    p = ms(max_connections=1, block_after=1, deferral_period=60.0)
    assert p.on_connect(IP, 0.0) is None
    for t in (1.0, 2.0, 3.0):
        assert p.on_connect(IP, t) is not None
    assert p.state(IP, 3.0).blocked_until is not None


def test_params_validate_and_scale() -> None:
    with pytest.raises(ValueError, match="hourly_budget"):
        MicrosoftParams(hourly_budget=0)
    with pytest.raises(ValueError, match="block_after"):
        MicrosoftParams(block_after=-1)
    p = MicrosoftParams().scaled(1 / 60)
    assert p.budget_window == pytest.approx(60.0)
    assert p.block_duration == pytest.approx(360.0)
    assert p.hourly_budget == 1000
    with pytest.raises(ValueError, match="scale"):
        MicrosoftParams().scaled(0)


# --- Gmail and Yahoo ------------------------------------------------------------------


def test_gmail_rate_limit_gives_4_7_28_until_the_window_has_room() -> None:
    p = GmailProfile(GmailParams(rate_limit=3, rate_window=10.0))
    for _ in range(3):
        assert send(p, 0.0) is None
    r = send(p, 5.0)
    assert r is not None
    assert r.tag == "4.7.28"
    assert r.reply.to_bytes().startswith(b"421 4.7.28 [127.0.0.3] ")
    assert b"unusual rate of unsolicited mail" in r.reply.to_bytes()
    assert send(p, 10.0) is None
    assert p.used(IP, 10.0) == 1  # the three of t=0 left the window at t=10


def test_yahoo_tss04_after_the_threshold_lasts_the_deferral() -> None:
    p = YahooProfile(YahooParams(volume_limit=2, volume_window=60.0, deferral_duration=1000.0))
    assert send(p, 0.0) is None
    assert send(p, 1.0) is None
    r = send(p, 2.0)
    assert r is not None
    assert r.tag == "TSS04"
    assert r.reply.to_bytes().startswith(
        b"421 4.7.0 [TSS04] Messages from 127.0.0.3 temporarily deferred due to unexpected "
        b"volume or user complaints"
    )
    assert p.deferred_until(IP, 2.0) == 1002.0
    assert send(p, 500.0) is not None  # the window has room, the deferral holds
    assert p.on_rcpt(IP, 500.0, first=False) is not None
    assert send(p, 1002.0) is None
    assert p.deferred_until(IP, 1002.0) is None
    assert p.on_rcpt(OTHER, 2.0, first=True) is None


def test_plain_and_make_profile() -> None:
    plain = PlainProfile()
    assert not plain.stateful
    assert plain.on_connect(IP, 0.0) is None
    assert plain.on_rcpt(IP, 0.0, first=True) is None
    m = make_profile("microsoft", hourly_budget=7, time_scale=0.5)
    assert isinstance(m, MicrosoftProfile)
    assert m.params.hourly_budget == 7
    assert m.params.budget_window == 1800.0
    assert isinstance(make_profile("gmail"), GmailProfile)
    assert isinstance(make_profile("yahoo", volume_limit=3), YahooProfile)
    assert isinstance(make_profile("plain"), PlainProfile)
    with pytest.raises(ValueError, match="unknown profile"):
        make_profile("aol")
    with pytest.raises(ValueError, match="unknown microsoft parameters"):
        make_profile("microsoft", budget=3)
    with pytest.raises(ValueError, match="no parameters"):
        make_profile("plain", budget=3)


# --- windows and the drain bound --------------------------------------------------------


def test_rolling_window_and_bucket_basics() -> None:
    w = RollingWindow(2, 10.0)
    w.reserve(0.0)
    w.commit(0.0)
    w.reserve(1.0)
    assert not w.has_room(1.0)
    w.release(1.0)
    assert w.has_room(1.0)
    assert w.next_free_at(1.0) == 1.0
    w.reserve(2.0)
    w.commit(2.0)
    assert w.next_free_at(3.0) == 10.0
    b = TokenBucket(2, 10.0)
    b.reserve(0.0)
    b.reserve(0.0)
    assert not b.has_room(4.0)
    assert b.has_room(5.0)  # one token refilled in 5 s
    b.reserve(5.0)
    assert b.used(5.0) == pytest.approx(2.0)
    b.release(5.0)
    assert b.used(5.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rolling"):
        RollingWindow(0, 1.0)
    with pytest.raises(ValueError, match="bucket"):
        TokenBucket(1, 0.0)


def test_drain_time_closed_cases() -> None:
    p = MicrosoftParams(hourly_budget=100, budget_window=3600.0, throttle_rate=None)
    assert fastest_drain_time(0, p) == 0.0
    assert fastest_drain_time(100, p) == 0.0  # the whole budget at once
    assert fastest_drain_time(101, p) == 3600.0
    assert fastest_drain_time(1000, p) == 9 * 3600.0
    assert fastest_drain_time(1000, p, sources=2) == 4 * 3600.0
    # The throttle spreads each window's batch: 100 per window, 30 per minute.
    q = MicrosoftParams(hourly_budget=100, throttle_rate=30, throttle_window=60.0)
    assert fastest_drain_time(100, q) == 180.0  # batches at 0, 60, 120, 180 s
    assert fastest_drain_time(101, q) == 3600.0
    # A bucket: 100 at once, then one per 36 s.
    b = MicrosoftParams(hourly_budget=100, budget_model=BudgetModel.BUCKET, throttle_rate=None)
    assert fastest_drain_time(110, b) == pytest.approx(360.0)
    with pytest.raises(ValueError, match="sources"):
        fastest_drain_time(1, p, sources=0)


def drain_through_profile(params: MicrosoftParams, n: int, step: float) -> tuple[float, int]:
    """Drive the profile with a sender that retries every ``step`` seconds until all ``n``
    messages are accepted; returns (time of the last acceptance, refusals)."""
    # A block would stop the drain: the test sender is patient, so never block.
    p = MicrosoftProfile(params)
    now = 0.0
    done = refused = 0
    last = 0.0
    while done < n:
        while done < n and p.on_rcpt(IP, now, first=True) is None:
            p.on_accept(IP, now)
            done += 1
            last = now
        if done < n:
            refused += 1
            now = round(now + step, 9)
    return last, refused


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(1, 30),
    window=st.integers(1, 50),
    throttle=st.one_of(st.none(), st.integers(1, 10)),
    minute=st.integers(1, 10),
    n=st.integers(1, 120),
    bucket=st.booleans(),
)
def test_the_bound_is_what_the_profile_allows(
    *, budget: int, window: int, throttle: int | None, minute: int, n: int, bucket: bool
) -> None:
    params = MicrosoftParams(
        hourly_budget=budget,
        budget_window=float(window),
        budget_model=BudgetModel.BUCKET if bucket else BudgetModel.ROLLING,
        throttle_rate=throttle,
        throttle_window=float(minute),
        block_after=10**9,
    )
    bound = fastest_drain_time(n, params)
    # A sender polling every 1/8 s (exact in binary floats) reaches the bound to within a
    # step, and never beats it.
    last, _ = drain_through_profile(params, n, 0.125)
    assert bound - 1e-6 <= last <= bound + 0.125 + 1e-6
    assert bound == greedy_drain_time(
        n,
        budget=budget,
        budget_span=float(window),
        bucket=bucket,
        throttle=throttle,
        throttle_span=float(minute),
    )
