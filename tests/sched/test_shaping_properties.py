"""Hypothesis: no sequence of replies (250, 421 RP-001, 421 4.3.2, 550 S3150, site failures,
refused and timed-out connections), operator commands and clock steps makes any shaping
limit exceed its configured value at any time:

* every Connect leaves the queue within the connection cap in force (backoff included), the
  source IP within ``source-ip-max-smtp-out``, the server within ``total-max-smtp-out``,
  and never uses a source IP a rule has disabled for that queue;
* every Deliver goes to a queue holding no more live (not closing) connections than its cap
  in force — connections above a lowered cap finish their work and get no more;
* the recipients handed out while one message rate is in force never exceed
  ``burst + W / interval`` in any window of W seconds (queue rates and the shared source
  rate), and new connections respect ``max-connect-rate`` and ``smtp-out-rampup-interval``;
* no recipient is lost or decided twice.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from shaping_net import max_in_window

from sluice.sched import (
    Action,
    BackoffSettings,
    Bounce,
    Close,
    Connect,
    Defer,
    Deliver,
    Delivered,
    Outcome,
    QueueMode,
    QueueSettings,
    RateLimit,
    Removed,
    ReplyRule,
    Result,
    Scheduler,
    Scope,
    SourceDisabled,
    SourceIp,
)

RP001 = "421 RP-001 (BAY) Unfortunately, messages from 192.0.2.7 weren't sent."
R432 = "421 4.3.2 The maximum number of concurrent connections has exceeded a limit"
S3150 = "550 5.7.1 Unfortunately, messages from [192.0.2.7] weren't sent (S3150)"

SHARED = SourceIp(address="10.0.0.1", max_smtp_out=3, max_msg_rate=RateLimit(count=1, seconds=2))
OTHER = SourceIp(address="10.0.0.2")
SEEDISH = (
    ReplyRule(
        code="421",
        literal="RP-001",
        mode="backoff",
        to_normal_after=100.0,
        max_smtp_out=3,
        max_msg_rate=RateLimit(count=1, seconds=4),
    ),
    ReplyRule(
        code="421",
        literal="4.3.2",
        mode="backoff",
        to_normal_after=60.0,
        max_smtp_out=1,
        max_msg_rate=RateLimit(count=1, seconds=10),
    ),
    ReplyRule(pattern=re.compile(r"^Connection refused"), mode="backoff"),
    ReplyRule(pattern=re.compile(r"S3150"), disable_source_ip=True, reenable_after=30.0),
)
SETTINGS = {
    "hot.test/v": QueueSettings(
        max_smtp_out=6,
        max_msg_rate=RateLimit(count=1, seconds=1),
        reply_rules=SEEDISH,
        sources=(SHARED, OTHER),
        retry_after=(20.0,),
        backoff=BackoffSettings(max_smtp_out=4, retry_after=(40.0,), to_normal_after=50.0),
    ),
    "other.test/v": QueueSettings(
        max_smtp_out=3,
        reply_rules=(ReplyRule(pattern=re.compile(r"^421"), mode="backoff"),),
        sources=(SHARED,),
        retry_after=(15.0,),
        backoff=BackoffSettings(
            max_smtp_out=2,
            max_msg_rate=RateLimit(count=1, seconds=5, burst=2),
            to_normal_after_delivery=True,
        ),
    ),
    "plain.test/v": QueueSettings(
        max_smtp_out=2,
        max_connect_rate=RateLimit(count=2, seconds=10),
        smtp_out_rampup_interval=3.0,
        reply_rules=(
            ReplyRule(
                pattern=re.compile(r"timed out"), disable_source_ip=True, reenable_after=20.0
            ),
        ),
        retry_after=(10.0,),
    ),
}
QUEUES = sorted(SETTINGS)
TOTAL_MAX = 8

REPLIES = [
    Outcome.delivered("250 2.0.0 OK"),
    Outcome.transient(RP001, Scope.MESSAGE),
    Outcome.transient(R432, Scope.SESSION),
    Outcome.permanent(S3150, Scope.MESSAGE),
    Outcome.transient("421 4.7.0 try again later", Scope.SITE),
    Outcome.transient("451 4.7.500 Server busy", Scope.RECIPIENT),
]
CONNECT_FAILURES = [
    Outcome.transient("Connection refused", Scope.SITE),
    Outcome.transient("Connection timed out", Scope.SITE),
    Outcome.transient(RP001, Scope.SITE),
]


class ShapingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_800_000_000.0
        self.sched = Scheduler(
            rng=random.Random(0), settings_for=SETTINGS.__getitem__, total_max_smtp_out=TOTAL_MAX
        )
        self.next_msg = 1
        self.pending: set[int] = set()
        self.conn_queue: dict[int, str] = {}
        self.conn_source: dict[int, str | None] = {}
        self.connecting: set[int] = set()
        self.idle: set[int] = set()
        self.busy: dict[int, Deliver] = {}
        self.closing: set[int] = set()
        #: queue -> source address -> disabled until
        self.disabled: dict[str, dict[str | None, float]] = defaultdict(dict)
        #: Per (queue, rate segment): send times; and per source.
        self.segment: dict[str, int] = dict.fromkeys(QUEUES, 0)
        self.rate: dict[str, RateLimit | None] = {q: SETTINGS[q].max_msg_rate for q in QUEUES}
        self.seg_rate: dict[tuple[str, int], RateLimit | None] = {
            (q, 0): SETTINGS[q].max_msg_rate for q in QUEUES
        }
        self.sends: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.source_sends: list[float] = []
        self.connects: dict[str, list[float]] = defaultdict(list)
        #: An independent model of what holds hot.test/v in backoff: trigger -> until.
        self.hot: dict[str, float] = {}

    # ---- the oracle for hot.test/v --------------------------------------------------------

    #: trigger -> (duration, cap, least interval between sends)
    HOT: ClassVar[dict[str, tuple[float, int, float]]] = {
        "rp001": (100.0, 3, 4.0),
        "r432": (60.0, 1, 10.0),
        "refused": (50.0, 4, 1.0),
        "command": (50.0, 4, 1.0),
    }

    def hot_saw(self, text: str) -> None:
        for key, needle in (("rp001", "421 RP-001"), ("r432", "421 4.3.2")):
            if text.startswith(needle[:3]) and needle[4:] in text:
                self.hot[key] = self.now + self.HOT[key][0]
                return
        if text.startswith("Connection refused"):
            self.hot["refused"] = self.now + self.HOT["refused"][0]

    def hot_expected(self) -> tuple[int, float]:
        active = [self.HOT[k] for k, until in self.hot.items() if self.now < until]
        if not active:
            return 6, 1.0
        return min(cap for _, cap, _ in active), max(iv for _, _, iv in active)

    def check_hot(self) -> None:
        if self.sched.snapshot("hot.test/v") is None:
            return
        limits = self.limits("hot.test/v")
        cap, interval = self.hot_expected()
        assert limits.max_smtp_out <= cap, (limits, self.hot, self.now)
        assert limits.max_msg_rate is not None
        assert limits.max_msg_rate.interval >= interval - 1e-9

    # ---- checking every decision ------------------------------------------------------

    def limits(self, q: str):  # type: ignore[no-untyped-def]
        snap = self.sched.snapshot(q)
        assert snap is not None
        assert snap.limits is not None
        return snap.limits

    def live(self, q: str) -> int:
        return sum(1 for c, cq in self.conn_queue.items() if cq == q and c not in self.closing)

    def observe_rates(self) -> None:
        for q in QUEUES:
            if self.sched.snapshot(q) is None:
                continue
            rate = self.limits(q).max_msg_rate
            if rate != self.rate[q]:
                self.rate[q] = rate
                self.segment[q] += 1
                self.seg_rate[(q, self.segment[q])] = rate

    def apply(self, actions: list[Action]) -> None:
        self.observe_rates()
        self.check_hot()
        for a in actions:
            match a:
                case Connect(queue=q, connection_id=cid, source=source):
                    cap = self.limits(q).max_smtp_out
                    assert self.live(q) < cap, f"{q}: connect beyond the cap {cap}"
                    assert len(self.conn_queue) < TOTAL_MAX
                    if source == SHARED.address:
                        held = sum(1 for s in self.conn_source.values() if s == source)
                        assert held < SHARED.max_smtp_out, "beyond source-ip-max-smtp-out"
                    until = self.disabled[q].get(source)
                    assert until is None or self.now >= until, "connect from a disabled source"
                    self.conn_queue[cid] = q
                    self.conn_source[cid] = source
                    self.connecting.add(cid)
                    self.connects[q].append(self.now)
                case Deliver(queue=q, connection_id=cid, transactions=txns):
                    assert cid in self.idle
                    assert self.live(q) <= self.limits(q).max_smtp_out, "work above the cap"
                    self.idle.discard(cid)
                    self.busy[cid] = a
                    for _t in txns:
                        self.sends[(q, self.segment[q])].append(self.now)
                        if self.conn_source[cid] == SHARED.address:
                            self.source_sends.append(self.now)
                case Close(connection_id=cid):
                    assert cid in self.conn_queue
                    assert cid not in self.connecting
                    self.idle.discard(cid)
                    self.closing.add(cid)
                case Delivered(msg_id=m) | Bounce(msg_id=m) | Removed(msg_id=m):
                    assert m in self.pending, f"{m} decided twice"
                    self.pending.discard(m)
                case Defer(msg_id=m):
                    assert m in self.pending
                case SourceDisabled(queue=q, source=source, until=until):
                    self.disabled[q][source] = float("inf") if until is None else until
                case _:
                    pass

    # ---- rules ------------------------------------------------------------------------

    @rule(q=st.sampled_from(QUEUES), n=st.integers(1, 6))
    def add(self, q: str, n: int) -> None:
        for _ in range(n):
            m = self.next_msg
            self.next_msg += 1
            self.pending.add(m)
            self.apply(self.sched.add(q, m, [0], self.now, self.now))

    @rule(dt=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.5, 10.0, 31.0, 61.0, 101.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.apply(self.sched.plan(self.now))

    @precondition(lambda self: self.connecting)
    @rule(data=st.data(), ok=st.integers(0, 3))
    def connect_done(self, data: st.DataObject, ok: int) -> None:
        cid = data.draw(st.sampled_from(sorted(self.connecting)))
        self.connecting.discard(cid)
        if ok:
            self.idle.add(cid)
            self.sched.connection_opened(cid, self.now)
        else:
            queue = self.conn_queue.pop(cid)
            del self.conn_source[cid]
            failure = data.draw(st.sampled_from(CONNECT_FAILURES))
            if queue == "hot.test/v":
                self.hot_saw(failure.text)
            self.apply(self.sched.connection_failed(cid, failure, self.now))
        self.apply(self.sched.plan(self.now))

    @precondition(lambda self: self.busy)
    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.busy)))
        deliver = self.busy.pop(cid)
        results = [
            Result(
                msg_id=t.msg_id,
                rcpts=t.rcpts,
                outcome=data.draw(st.sampled_from(REPLIES[:1]) | st.sampled_from(REPLIES)),
            )
            for t in deliver.transactions
        ]
        if deliver.queue == "hot.test/v":
            for r in results:
                self.hot_saw(r.outcome.text)
        actions = self.sched.report(cid, results, self.now)
        if cid not in self.closing:
            self.idle.add(cid)
        self.apply(actions)
        if cid in self.closing:
            self.idle.discard(cid)
        self.apply(self.sched.plan(self.now))

    @precondition(lambda self: self.closing or self.idle or self.busy)
    @rule(data=st.data())
    def closed(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.closing | self.idle | set(self.busy))))
        self.closing.discard(cid)
        self.idle.discard(cid)
        self.busy.pop(cid, None)
        del self.conn_queue[cid]
        del self.conn_source[cid]
        self.apply(self.sched.connection_closed(cid, self.now))

    @rule(q=st.sampled_from(QUEUES), mode=st.sampled_from(list(QueueMode)))
    def command(self, q: str, mode: QueueMode) -> None:
        # The Close actions for idle connections above a lowered cap (applied after the
        # oracle has heard of the command, as its checks run on every apply).
        closes = self.sched.set_mode(q, mode, self.now, "operator")
        if q == "hot.test/v":
            if mode is QueueMode.NORMAL:
                self.hot.clear()
            else:
                self.hot["command"] = self.now + self.HOT["command"][0]
        self.apply(closes)
        self.apply(self.sched.plan(self.now))

    # ---- invariants -------------------------------------------------------------------

    @invariant()
    def rates_never_exceeded(self) -> None:
        for (q, seg), times in self.sends.items():
            rate = self.seg_rate[(q, seg)]
            if rate is None:
                continue
            for w in (rate.interval, 3 * rate.interval, 60.0):
                assert max_in_window(times, w) <= rate.burst + w / rate.interval + 1e-9, (q, w)
        rate = SHARED.max_msg_rate
        assert rate is not None
        for w in (rate.interval, 10.0, 60.0):
            assert max_in_window(self.source_sends, w) <= 1 + w / rate.interval + 1e-9

    @invariant()
    def connect_rates_never_exceeded(self) -> None:
        times = self.connects["plain.test/v"]
        for w in (2.9, 10.0, 30.0):
            assert max_in_window(times, w) <= 1 + w / 5.0 + 1e-9
        assert max_in_window(times, 2.9) <= 1  # smtp-out-rampup-interval 3 s

    @invariant()
    def recipients_accounted_for(self) -> None:
        held = sum(s.recipients for s in self.sched.snapshots())
        assert held == len(self.pending)
        assert self.sched.connections == len(self.conn_queue) <= TOTAL_MAX


ShapingMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestShaping = ShapingMachine.TestCase
