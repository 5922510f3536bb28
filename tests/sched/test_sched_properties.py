"""Hypothesis: no sequence of mail, decisions, outcomes, commands and clock steps makes the
scheduler exceed a limit, lose a recipient, or decide anything twice."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

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
    Removed,
    Result,
    Scheduler,
    Scope,
    Wake,
)

SETTINGS = {
    "a.test/v": QueueSettings(
        max_smtp_out=2,
        max_msg_per_connection=3,
        max_errors_per_connection=2,
        max_rcpt_per_message=2,
        retry_after=(20.0, 300.0),
        min_retry_interval=100.0,  # above the first retry-after entry: the floor must lift it
        bounce_after=2000.0,
        backoff=BackoffSettings(max_smtp_out=1, retry_after=(500.0,)),
    ),
    "b.test/v": QueueSettings(max_smtp_out=1, retry_after=(30.0,), bounce_after=900.0),
    "c.test/v": QueueSettings(max_smtp_out=3, bounce_on_4xx=True, connection_idle_timeout=20.0),
}
QUEUES = sorted(SETTINGS)
TOTAL_MAX = 4

OUTCOMES = [
    Outcome.delivered(),
    Outcome.transient("450 busy"),
    Outcome.permanent("550 unknown"),
    Outcome.transient("452 message", Scope.MESSAGE),
    Outcome.transient("421 site", Scope.SITE),
    Outcome.transient("421 closing", Scope.SESSION),
]
CONNECT_FAILURES = [
    Outcome.transient("connection refused", Scope.SITE),
    Outcome.transient("SERVFAIL", Scope.SITE, dns=True),
    Outcome.permanent("NXDOMAIN", Scope.SITE),
]


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_800_000_000.0
        self.sched = Scheduler(
            rng=random.Random(0), settings_for=SETTINGS.__getitem__, total_max_smtp_out=TOTAL_MAX
        )
        self.next_msg = 1
        self.queue_of: dict[int, str] = {}
        self.pending: set[tuple[int, int]] = set()  # added, not final
        self.final: dict[tuple[int, int], str] = {}
        self.in_flight: set[tuple[int, int]] = set()
        self.conn_queue: dict[int, str] = {}
        self.connecting: set[int] = set()
        self.idle: set[int] = set()
        self.busy: dict[int, Deliver] = {}
        self.closing: set[int] = set()
        self.msgs_on: dict[int, int] = {}
        self.paused: set[str] = set()
        self.mode: dict[str, QueueMode] = dict.fromkeys(QUEUES, QueueMode.NORMAL)
        #: Earliest time each deferred recipient may be tried again (min-retry-interval).
        self.not_before: dict[tuple[int, int], float] = {}

    # ---- applying decisions ---------------------------------------------------------

    def cap(self, q: str) -> int:
        s = SETTINGS[q]
        if self.mode[q] is QueueMode.BACKOFF and s.backoff.max_smtp_out is not None:
            return s.backoff.max_smtp_out
        return s.max_smtp_out

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            match a:
                case Connect(queue=q, connection_id=cid):
                    assert q not in self.paused
                    held = sum(1 for c in self.conn_queue.values() if c == q)
                    assert held < self.cap(q), f"{q}: connect beyond max-smtp-out"
                    assert len(self.conn_queue) < TOTAL_MAX, "connect beyond total-max-smtp-out"
                    self.conn_queue[cid] = q
                    self.connecting.add(cid)
                    self.msgs_on[cid] = 0
                case Deliver(queue=q, connection_id=cid, transactions=txns):
                    assert q not in self.paused
                    assert cid in self.idle, "work for a connection that is not open and idle"
                    self.idle.discard(cid)
                    self.busy[cid] = a
                    self.msgs_on[cid] += len(txns)
                    s = SETTINGS[q]
                    if s.max_msg_per_connection:
                        assert self.msgs_on[cid] <= s.max_msg_per_connection
                    for t in txns:
                        if s.max_rcpt_per_message:
                            assert len(t.rcpts) <= s.max_rcpt_per_message
                        for r in t.rcpts:
                            key = (t.msg_id, r)
                            assert key in self.pending, f"{key} sent but not pending"
                            assert key not in self.in_flight, f"{key} in flight twice"
                            assert self.now >= self.not_before.get(key, 0.0), "retried too soon"
                            self.in_flight.add(key)
                case Close(connection_id=cid):
                    assert cid in self.conn_queue
                    assert cid not in self.connecting
                    self.idle.discard(cid)
                    self.closing.add(cid)
                case (
                    Delivered(msg_id=m, rcpts=rs)
                    | Bounce(msg_id=m, rcpts=rs)
                    | Removed(msg_id=m, rcpts=rs)
                ):
                    for r in rs:
                        self.finish((m, r), type(a).__name__)
                case Defer(msg_id=m, rcpts=rs, next_attempt=at):
                    for r in rs:
                        key = (m, r)
                        assert key in self.pending
                        self.in_flight.discard(key)
                        q = self.queue_of[m]
                        self.not_before[key] = self.now + SETTINGS[q].min_retry_interval
                        assert at >= self.now
                case Wake(at=at):
                    assert at >= self.now - 1.0

    def finish(self, key: tuple[int, int], how: str) -> None:
        assert key in self.pending, f"{key} finalised twice ({how})"
        self.pending.discard(key)
        self.in_flight.discard(key)
        self.final[key] = how

    def release_in_flight(self, cid: int) -> None:
        deliver = self.busy.pop(cid, None)
        if deliver is not None:
            for t in deliver.transactions:
                for r in t.rcpts:
                    self.in_flight.discard((t.msg_id, r))

    # ---- rules ----------------------------------------------------------------------

    @rule(q=st.sampled_from(QUEUES), n=st.integers(1, 4), age=st.sampled_from([0.0, 5000.0]))
    def add(self, q: str, n: int, age: float) -> None:
        m = self.next_msg
        self.next_msg += 1
        self.queue_of[m] = q
        self.pending.update((m, r) for r in range(n))
        self.apply(self.sched.add(q, m, list(range(n)), self.now - age, self.now))

    @rule()
    def plan(self) -> None:
        self.apply(self.sched.plan(self.now))

    @rule(dt=st.sampled_from([0.5, 1.0, 20.0, 61.0, 301.0, 1000.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.apply(self.sched.plan(self.now))

    @precondition(lambda self: self.connecting)
    @rule(data=st.data(), ok=st.booleans())
    def connect_done(self, data: st.DataObject, ok: bool) -> None:
        self.finish_connect(data.draw(st.sampled_from(sorted(self.connecting))), ok, data)

    @rule(data=st.data(), dt=st.sampled_from([0.0, 21.0, 61.0, 301.0]))
    def cycle(self, data: st.DataObject, dt: float) -> None:
        """Let time pass, plan, finish every connect (mostly successfully), plan, report every
        transaction: one busy round of the manager loop, so that retries happen often."""
        self.now += dt
        self.plan()
        for cid in sorted(self.connecting):
            self.finish_connect(cid, data.draw(st.integers(0, 3)) > 0, data)
        self.plan()
        for cid in sorted(self.busy):
            if cid in self.busy:
                self.finish_report(cid, data)

    def finish_connect(self, cid: int, ok: bool, data: st.DataObject) -> None:
        self.connecting.discard(cid)
        if ok:
            self.idle.add(cid)
            self.sched.connection_opened(cid, self.now)
        else:
            del self.conn_queue[cid]
            failure = data.draw(st.sampled_from(CONNECT_FAILURES))
            self.apply(self.sched.connection_failed(cid, failure, self.now))

    @precondition(lambda self: self.busy)
    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        self.finish_report(data.draw(st.sampled_from(sorted(self.busy))), data)

    def finish_report(self, cid: int, data: st.DataObject) -> None:
        deliver = self.busy[cid]
        n = data.draw(st.integers(1, len(deliver.transactions)))
        results = []
        finished = []
        for t in deliver.transactions[:n]:
            named = False
            for r in t.rcpts:
                if data.draw(st.integers(0, 9)) == 0:
                    continue  # not reported: treated as untried
                outcome = data.draw(st.sampled_from(OUTCOMES[:3]) | st.sampled_from(OUTCOMES))
                results.append(Result(msg_id=t.msg_id, rcpts=(r,), outcome=outcome))
                named = True
            if named:
                finished.append(t)
        if not results:
            return
        for t in finished:
            self.in_flight.difference_update((t.msg_id, r) for r in t.rcpts)
        still = tuple(t for t in deliver.transactions if t not in finished)
        actions = self.sched.report(cid, results, self.now)
        if still:
            self.busy[cid] = Deliver(queue=deliver.queue, connection_id=cid, transactions=still)
        else:
            del self.busy[cid]
            if cid not in self.closing:
                self.idle.add(cid)
        self.apply(actions)
        if any(isinstance(a, Close) and a.connection_id == cid for a in actions):
            self.idle.discard(cid)

    @precondition(lambda self: self.closing or self.idle or self.busy)
    @rule(data=st.data())
    def closed(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.closing | self.idle | set(self.busy))))
        self.closing.discard(cid)
        self.idle.discard(cid)
        self.release_in_flight(cid)
        del self.conn_queue[cid]
        self.apply(self.sched.connection_closed(cid, self.now))

    @rule(q=st.sampled_from(QUEUES), cmd=st.sampled_from(["pause", "resume", "schedule", "mode"]))
    def command(self, q: str, cmd: str) -> None:
        if cmd == "pause":
            self.sched.pause(q, self.now)
            self.paused.add(q)
        elif cmd == "resume":
            self.sched.resume(q, self.now)
            self.paused.discard(q)
        elif cmd == "schedule":
            self.sched.schedule_now(q, self.now)
            for key in list(self.not_before):
                if self.queue_of[key[0]] == q:
                    del self.not_before[key]
        else:
            new = QueueMode.BACKOFF if self.mode[q] is QueueMode.NORMAL else QueueMode.NORMAL
            self.mode[q] = new
            self.sched.set_mode(q, new, self.now)

    @rule(q=st.sampled_from(QUEUES))
    def delete(self, q: str) -> None:
        self.apply(self.sched.delete(q, self.now))

    # ---- invariants -----------------------------------------------------------------

    @invariant()
    def every_recipient_is_accounted_for(self) -> None:
        held = sum(s.recipients for s in self.sched.snapshots())
        assert held == len(self.pending), (held, len(self.pending))
        in_flight = sum(s.in_flight for s in self.sched.snapshots())
        assert in_flight == len(self.in_flight)

    @invariant()
    def connection_counts_agree(self) -> None:
        assert self.sched.connections == len(self.conn_queue)
        assert self.sched.connections <= TOTAL_MAX


SchedulerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestScheduler = SchedulerMachine.TestCase
