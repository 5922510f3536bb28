"""A stand-in for the daemon's manager loop, for scheduler tests: executes the scheduler's
decisions against a scripted "network" on a fake clock, and keeps a ledger of what happened.

Connections open (or fail) and transactions complete at the moment they are started unless a
test holds them (``hold=True``), in which case the test completes them by hand.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sluice.clock import FakeClock
from sluice.sched import (
    Action,
    Bounce,
    Close,
    Connect,
    Defer,
    Deliver,
    Delivered,
    Outcome,
    Removed,
    Result,
    Scheduler,
    Transaction,
    Wake,
)

#: connect(queue) -> None (opened) or the failure outcome.
ConnectFn = Callable[[str], Outcome | None]
#: deliver(queue, transaction, now) -> results for that transaction.
DeliverFn = Callable[[str, Transaction, float], list[Result]]


def always_connect(_queue: str) -> Outcome | None:
    return None


def deliver_all(_queue: str, txn: Transaction, _now: float) -> list[Result]:
    return [Result(msg_id=txn.msg_id, rcpts=txn.rcpts, outcome=Outcome.delivered())]


@dataclass
class Ledger:
    delivered: Counter[tuple[int, int]] = field(default_factory=Counter)
    bounced: dict[tuple[int, int], Bounce] = field(default_factory=dict)
    bounced_at: dict[tuple[int, int], float] = field(default_factory=dict)
    removed: set[tuple[int, int]] = field(default_factory=set)
    defers: list[Defer] = field(default_factory=list)
    #: (time, queue) of every Connect.
    connects: list[tuple[float, str]] = field(default_factory=list)
    #: (time, queue, msg_id, rcpt) of every recipient handed to a connection.
    attempts: list[tuple[float, str, int, int]] = field(default_factory=list)
    closes: list[Close] = field(default_factory=list)
    #: Most connections (opening + open + closing) seen per queue at once.
    peak_conns: Counter[str] = field(default_factory=Counter)
    peak_total: int = 0
    #: Transactions per connection id.
    msgs_per_conn: Counter[int] = field(default_factory=Counter)

    def final(self, key: tuple[int, int]) -> str | None:
        if key in self.delivered:
            return "delivered"
        if key in self.bounced:
            return "bounced"
        if key in self.removed:
            return "removed"
        return None


class Driver:
    """Runs a Scheduler against scripted connect/deliver behaviour on a fake clock."""

    def __init__(
        self,
        sched: Scheduler,
        clock: FakeClock | None = None,
        connect: ConnectFn = always_connect,
        deliver: DeliverFn = deliver_all,
        *,
        hold: bool = False,
    ) -> None:
        self.sched = sched
        self.clock = clock or FakeClock()
        self.connect = connect
        self.deliver = deliver
        self.hold = hold
        self.ledger = Ledger()
        self.wake: float | None = None
        #: Held work (hold=True): connection ids still connecting, and Deliver actions.
        self.connecting: dict[int, str] = {}
        self.delivering: dict[int, Deliver] = {}
        self.open: dict[int, str] = {}
        self.conn_queue: dict[int, str] = {}

    @property
    def now(self) -> float:
        return self.clock.wall()

    def add(self, queue: str, msg_id: int, rcpts: tuple[int, ...] = (0,), **kw: float) -> None:
        arrival = kw.pop("arrival", self.now)
        self.execute(self.sched.add(queue, msg_id, rcpts, arrival, self.now, **kw))  # type: ignore[arg-type]

    def step(self) -> list[Action]:
        actions = self.sched.plan(self.now)
        self.execute(actions)
        return actions

    def execute(self, actions: list[Action]) -> None:
        queue_actions = list(actions)
        while queue_actions:
            action = queue_actions.pop(0)
            queue_actions.extend(self._do(action))
            self._watch()

    def _watch(self) -> None:
        per_queue: Counter[str] = Counter(self.conn_queue.values())
        for q, n in per_queue.items():
            self.ledger.peak_conns[q] = max(self.ledger.peak_conns[q], n)
        self.ledger.peak_total = max(self.ledger.peak_total, len(self.conn_queue))

    def _do(self, action: Action) -> list[Action]:
        led = self.ledger
        now = self.now
        match action:
            case Connect(queue=q, connection_id=cid):
                led.connects.append((now, q))
                self.conn_queue[cid] = q
                if self.hold:
                    self.connecting[cid] = q
                    return []
                return self.finish_connect(cid)
            case Deliver(queue=q, connection_id=cid, transactions=txns):
                for t in txns:
                    for r in t.rcpts:
                        led.attempts.append((now, q, t.msg_id, r))
                led.msgs_per_conn[cid] += len(txns)
                if self.hold:
                    self.delivering[cid] = action
                    return []
                return self.finish_deliver(cid, action)
            case Close(connection_id=cid):
                led.closes.append(action)
                self.open.pop(cid, None)
                self.delivering.pop(cid, None)
                self.conn_queue.pop(cid, None)
                return self.sched.connection_closed(cid, now)
            case Delivered(msg_id=m, rcpts=rs):
                for r in rs:
                    led.delivered[(m, r)] += 1
            case Bounce(msg_id=m, rcpts=rs):
                for r in rs:
                    assert (m, r) not in led.bounced, "bounced twice"
                    led.bounced[(m, r)] = action
                    led.bounced_at[(m, r)] = now
            case Removed(msg_id=m, rcpts=rs):
                led.removed.update((m, r) for r in rs)
            case Defer():
                led.defers.append(action)
            case Wake(at=at):
                self.wake = at
        return []

    def finish_connect(self, cid: int, failure: Outcome | None = None) -> list[Action]:
        q = self.connecting.pop(cid, None) or self.conn_queue[cid]
        outcome = failure if failure is not None else self.connect(q)
        if outcome is None:
            self.open[cid] = q
            self.sched.connection_opened(cid, self.now)
            return []
        self.conn_queue.pop(cid, None)
        return self.sched.connection_failed(cid, outcome, self.now)

    def finish_deliver(self, cid: int, deliver: Deliver | None = None) -> list[Action]:
        d = deliver or self.delivering.pop(cid)
        self.delivering.pop(cid, None)
        results: list[Result] = []
        for t in d.transactions:
            results.extend(self.deliver(d.queue, t, self.now))
        return self.sched.report(cid, results, self.now)

    def run_until(self, end: float, max_steps: int = 1_000_000) -> None:
        """Plan, execute, jump the clock to the next Wake; stop at ``end`` or when idle."""
        for _ in range(max_steps):
            self.wake = None
            actions = self.step()
            busy = any(not isinstance(a, Wake) for a in actions)
            if busy:
                continue
            if self.wake is None or self.wake > end:
                if end > self.now:
                    self.clock.advance(end - self.now)
                return
            self.clock.advance(max(0.0, self.wake - self.now))
        raise AssertionError("scheduler did not settle")


def by_queue(pairs: list[tuple[float, str]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for t, q in pairs:
        out[q].append(t)
    return out
