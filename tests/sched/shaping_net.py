"""A simulated network for shaping tests: the scheduler's decisions take time on a fake clock.

Connections open ``connect_delay`` seconds after ``Connect`` (or fail, as ``on_connect``
says), each ``Deliver`` completes ``txn_delay`` seconds later with the outcomes ``reply``
gives, and a ``Close`` completes at once. ``run_until`` jumps the clock from event to event
(and to the scheduler's ``Wake`` times), so an hour of traffic takes milliseconds. The net
records every Connect, Deliver and Close with its time, and checks after every step that no
queue holds more connections than its cap allowed when they were opened.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sluice.sched import (
    Action,
    Close,
    Connect,
    Deliver,
    Delivered,
    ModeChanged,
    Outcome,
    Result,
    Scheduler,
    SourceDisabled,
    Transaction,
    Wake,
)

#: reply(now, queue, transaction, connection id) -> the outcome of every recipient.
ReplyFn = Callable[[float, str, Transaction, int], Outcome]
#: on_connect(now, queue, source) -> None (opened) or the failure.
ConnectFn = Callable[[float, str, str | None], Outcome | None]


def ok_reply(_now: float, _q: str, _t: Transaction, _cid: int) -> Outcome:
    return Outcome.delivered()


def ok_connect(_now: float, _q: str, _source: str | None) -> Outcome | None:
    return None


@dataclass
class Log:
    #: (time, queue, connection id, source)
    connects: list[tuple[float, str, int, str | None]] = field(default_factory=list)
    #: (time, queue, connection id, recipients)
    delivers: list[tuple[float, str, int, int]] = field(default_factory=list)
    closes: list[tuple[float, Close]] = field(default_factory=list)
    modes: list[tuple[float, ModeChanged]] = field(default_factory=list)
    disabled: list[tuple[float, SourceDisabled]] = field(default_factory=list)
    other: list[tuple[float, Action]] = field(default_factory=list)
    delivered: int = 0

    def deliver_times(self, queue: str | None = None) -> list[float]:
        return [t for t, q, _, _ in self.delivers if queue is None or q == queue]

    def connect_times(self, queue: str | None = None) -> list[float]:
        return [t for t, q, _, _ in self.connects if queue is None or q == queue]


class Net:
    """Runs a Scheduler against simulated remote hosts on a fake clock."""

    def __init__(
        self,
        sched: Scheduler,
        *,
        start: float = 1_800_000_000.0,
        connect_delay: float = 0.1,
        txn_delay: float = 0.5,
        reply: ReplyFn = ok_reply,
        on_connect: ConnectFn = ok_connect,
    ) -> None:
        self.sched = sched
        self.now = start
        self.connect_delay = connect_delay
        self.txn_delay = txn_delay
        self.reply = reply
        self.on_connect = on_connect
        self.log = Log()
        self._events: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._wake: float | None = None
        self.queue_of: dict[int, str] = {}
        self.source_of: dict[int, str | None] = {}
        self.busy: dict[int, Deliver] = {}
        self.open: set[int] = set()
        #: connection id -> times it was given work.
        self.work: defaultdict[int, list[float]] = defaultdict(list)
        self.peak: Counter[str] = Counter()
        self.peak_source: Counter[str | None] = Counter()

    # ---- helpers for tests ------------------------------------------------------------

    def conns(self, queue: str) -> int:
        return sum(1 for q in self.queue_of.values() if q == queue)

    def source_conns(self, source: str) -> int:
        return sum(1 for s in self.source_of.values() if s == source)

    def add(self, queue: str, msg_id: int, rcpts: tuple[int, ...] = (0,), size: int = 0) -> None:
        self.execute(self.sched.add(queue, msg_id, rcpts, self.now, self.now, size=size))

    # ---- the loop ---------------------------------------------------------------------

    def _push(self, at: float, kind: str, cid: int) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, cid))

    def execute(self, actions: list[Action]) -> None:
        for a in actions:
            self._do(a)

    def _do(self, a: Action) -> None:
        now = self.now
        match a:
            case Connect(queue=q, connection_id=cid, source=source):
                self.log.connects.append((now, q, cid, source))
                self.queue_of[cid] = q
                self.source_of[cid] = source
                self.peak[q] = max(self.peak[q], self.conns(q))
                self.peak_source[source] = max(
                    self.peak_source[source], self.source_conns(source) if source else 0
                )
                self._push(now + self.connect_delay, "open", cid)
            case Deliver(queue=q, connection_id=cid, transactions=txns):
                assert cid in self.open, "work for a connection that is not open"
                assert cid not in self.busy, "work for a busy connection"
                self.busy[cid] = a
                self.work[cid].append(now)
                for t in txns:
                    self.log.delivers.append((now, q, cid, len(t.rcpts)))
                self._push(now + self.txn_delay, "done", cid)
            case Close(connection_id=cid):
                self.log.closes.append((now, a))
                self._push(now, "closed", cid)
            case Wake(at=at):
                self._wake = at
            case ModeChanged():
                self.log.modes.append((now, a))
            case SourceDisabled():
                self.log.disabled.append((now, a))
            case Delivered(rcpts=rs):
                self.log.delivered += len(rs)
            case _:
                self.log.other.append((now, a))

    def _event(self, kind: str, cid: int) -> None:
        now = self.now
        if kind == "open":
            if cid not in self.queue_of:
                return
            q = self.queue_of[cid]
            failure = self.on_connect(now, q, self.source_of[cid])
            if failure is None:
                self.open.add(cid)
                self.sched.connection_opened(cid, now)
            else:
                del self.queue_of[cid]
                del self.source_of[cid]
                self.execute(self.sched.connection_failed(cid, failure, now))
        elif kind == "done":
            d = self.busy.pop(cid, None)
            if d is None:
                return
            results = [
                Result(msg_id=t.msg_id, rcpts=t.rcpts, outcome=self.reply(now, d.queue, t, cid))
                for t in d.transactions
            ]
            self.execute(self.sched.report(cid, results, now))
        elif kind == "closed":
            if cid not in self.queue_of:
                return
            self.busy.pop(cid, None)
            self.open.discard(cid)
            del self.queue_of[cid]
            del self.source_of[cid]
            self.execute(self.sched.connection_closed(cid, now))

    def step(self) -> None:
        self._wake = None
        self.execute(self.sched.plan(self.now))

    def run_until(self, end: float, max_steps: int = 2_000_000) -> None:
        """Plan, run due events, jump to the next event or wake-up; stop at ``end``."""
        for _ in range(max_steps):
            self.step()
            while self._events and self._events[0][0] <= self.now:
                _, _, kind, cid = heapq.heappop(self._events)
                self._event(kind, cid)
                self.step()
            nxt = self._events[0][0] if self._events else None
            if self._wake is not None and (nxt is None or self._wake < nxt):
                nxt = self._wake
            if nxt is None or nxt > end:
                self.now = max(self.now, end)
                self.step()
                return
            self.now = max(self.now, nxt)
        raise AssertionError("simulation did not settle")


def max_in_window(times: list[float], window: float) -> int:
    """Most events in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best
