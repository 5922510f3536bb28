"""Scheduler benchmark: memory per queued recipient, and scheduler CPU per delivered recipient.

Usage: python bench/bench_sched.py [--recipients N] [--queues Q] [--deliver N]

1. Memory (tracemalloc): queue N recipients (default 1,000,000) as single-recipient messages
   spread over Q queues, twice: as new mail (one arrival time per injection batch, the common
   case) and as recovered deferred mail (each with its own arrival and next-attempt time, the
   worst case). Prints bytes per queued recipient.
2. CPU: deliver N recipients (default 200,000) through plan / connection_opened / report on a
   fake clock with instant, successful deliveries; prints microseconds of scheduler time per
   delivered recipient, and the share spent in plan().
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc

from sluice.sched import (
    Close,
    Connect,
    Deliver,
    Outcome,
    QueueSettings,
    Result,
    Scheduler,
)

NOW = 1_800_000_000.0


def measure_memory(n: int, queues: int, recovered: bool) -> float:
    names = [f"d{i}.example/vmta{i % 4}" for i in range(queues)]
    gc.collect()
    tracemalloc.start()
    sched = Scheduler(rng=random.Random(1))
    for name in names:
        sched.queue(name)
    base, _ = tracemalloc.get_traced_memory()
    batch_arrival = NOW
    for i in range(n):
        q = names[i % queues]
        if recovered:
            arrival = NOW - 3600.0 - i % 7200
            sched.add(q, 1_000_000 + i, (0,), arrival, NOW, attempts=2, next_attempt=NOW + i % 3600)
        else:
            if i % 1000 == 0:
                batch_arrival = NOW + i / 1000.0
            sched.add(q, 1_000_000 + i, (0,), batch_arrival, NOW)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = sum(s.recipients for s in sched.snapshots())
    assert held == n, held
    return (used - base) / n


def measure_cpu(n: int, queues: int) -> tuple[float, float, int]:
    names = [f"d{i}.example/v" for i in range(queues)]
    settings = QueueSettings(max_smtp_out=20, connection_idle_timeout=5.0)
    sched = Scheduler(rng=random.Random(1), settings_for=lambda _q: settings)
    for i in range(n):
        sched.add(names[i % queues], i + 1, (0,), NOW, NOW)
    ok = Outcome.delivered()
    delivered = 0
    plan_time = 0.0
    start = time.perf_counter()
    now = NOW
    plans = 0
    while delivered < n:
        t0 = time.perf_counter()
        actions = sched.plan(now)
        plan_time += time.perf_counter() - t0
        plans += 1
        for a in actions:
            if isinstance(a, Connect):
                sched.connection_opened(a.connection_id, now)
            elif isinstance(a, Deliver):
                results = [
                    Result(msg_id=t.msg_id, rcpts=t.rcpts, outcome=ok) for t in a.transactions
                ]
                sched.report(a.connection_id, results, now)
                delivered += len(results)
            elif isinstance(a, Close):
                sched.connection_closed(a.connection_id, now)
        now += 0.001
    total = time.perf_counter() - start
    return total / n * 1e6, plan_time / n * 1e6, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--deliver", type=int, default=200_000)
    args = parser.parse_args()
    new = measure_memory(args.recipients, args.queues, recovered=False)
    print(
        f"memory, new mail:        {new:6.1f} bytes per queued recipient "
        f"({args.recipients:,} recipients, {args.queues} queues)"
    )
    rec = measure_memory(args.recipients, args.queues, recovered=True)
    print(f"memory, recovered/deferred: {rec:6.1f} bytes per queued recipient")
    total_us, plan_us, plans = measure_cpu(args.deliver, 100)
    print(
        f"cpu: {total_us:5.2f} us scheduler time per delivered recipient "
        f"(plan {plan_us:5.2f} us; {args.deliver:,} recipients, 100 queues, {plans} plans, "
        f"batches of up to 10)"
    )


if __name__ == "__main__":
    main()
