"""Benchmark of the durable spool: group-commit stores, marks, removes, and recovery.

Prints numbers; asserts nothing. Examples::

    python bench/bench_spool.py store --concurrency 1,20,50,100 --n 20000
    python bench/bench_spool.py mark --n 50000
    python bench/bench_spool.py cycle --batches 10,100 --n 20000 --repeat 5
    python bench/bench_spool.py recover --recover-n 1000000 --dir /var/tmp/spool1m [--drop-caches]
    python bench/bench_spool.py relay --kind segment --n 20000 --repeat 3

``--kind sqlite|segment`` picks the implementation (SqliteSpool or SegmentSpool) for every
mode; ``recover`` builds and measures a spool of that kind.

``cycle`` measures the CPU cost of a message's whole life in the spool, the way a relay uses
it: rounds of ``batch`` concurrent stores (one commit), one ``mark`` of their final states
(one commit), then ``batch`` concurrent removes (one commit); and the same without the mark.
It prints CPU µs per message over the whole process (user + system, every thread, so the
writer thread counts) and the writer thread's own share, as the median of ``--repeat`` runs.

``recover`` builds the spool once (reused if ``--dir`` already holds that many messages), then
measures in a fresh subprocess: open + ``recover()`` fully iterated into a minimal queue index
(id per ``domain/vmta``), wall time, CPU time and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import uvloop

from sluice.message import Envelope, RcptState, Recipient
from sluice.spool import AnySpool, RcptUpdate, open_spool

#: The implementation every mode opens (set by ``--kind``).
KIND = "sqlite"


async def open_kind(path: str, **kw: float | int | bool | None) -> AnySpool:
    return await open_spool(path, kind=KIND, **kw)


def envelope(i: int) -> Envelope:
    return Envelope(
        sender="bounces@sender.example",
        recipients=(Recipient(address=f"user{i}@dest{i % 500}.example"),),
        vmta="vmta-a",
        job_id="job-1",
        source_ip="127.0.0.1",
        source_helo="injector.local",
        arrival=1_800_000_000.0 + i,
    )


def body(i: int, size: int) -> bytes:
    head = b"Subject: message %d\r\n\r\n" % i
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


def use_uvloop() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def bench_store(
    path: str, concurrency: int, n: int, size: int, linger: float | None
) -> dict[str, float]:
    kw = {} if linger is None else {"linger": linger}
    spool = await open_kind(path, **kw)  # type: ignore[arg-type]
    bodies = [body(i, size) for i in range(64)]
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await spool.store(envelope(i), bodies[i % 64])

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stats = spool.write_stats
    await spool.close()
    return {
        "msgs_per_s": n / wall,
        "cpu_s_per_1000": cpu / n * 1000,
        "commits": stats.batches,
        "avg_batch": stats.ops / max(1, stats.batches),
    }


def _thread_cpu(thread_id: int | None) -> float:
    if thread_id is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread_id))


async def bench_cycle(path: str, batch: int, n: int, size: int, mark: bool) -> dict[str, float]:
    """One run of the store → (mark) → remove life cycle in rounds of ``batch`` messages."""
    spool = await open_kind(path, max_batch=max(batch, 512))
    writer_id = spool._wq._thread.ident
    envs = [envelope(i) for i in range(n)]
    bodies = [body(i, size) for i in range(64)]
    # Warm up (creates the tables' first pages and the WAL), not measured.
    warm = list(await asyncio.gather(*(spool.store(envs[i], bodies[0]) for i in range(batch))))
    await asyncio.gather(*(spool.remove(m) for m in warm))
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wcpu0, t0 = time.process_time(), _thread_cpu(writer_id), time.perf_counter()
    for start in range(0, n, batch):
        chunk = range(start, min(n, start + batch))
        ids = await asyncio.gather(*(spool.store(envs[i], bodies[i % 64]) for i in chunk))
        if mark:
            await spool.mark(
                [
                    RcptUpdate(
                        msg_id=m,
                        rcpt_index=0,
                        state=RcptState.DELIVERED,
                        attempts=1,
                        detail="250 ok",
                    )
                    for m in ids
                ]
            )
        await asyncio.gather(*(spool.remove(m) for m in ids))
    wall = time.perf_counter() - t0
    cpu, wcpu = time.process_time() - cpu0, _thread_cpu(writer_id) - wcpu0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    stats = spool.write_stats
    await spool.close()
    return {
        "us_per_msg": cpu / n * 1e6,
        "writer_us_per_msg": wcpu / n * 1e6,
        "sys_us_per_msg": (ru1.ru_stime - ru0.ru_stime) / n * 1e6,
        "msgs_per_s": n / wall,
        "commits": stats.batches,
    }


async def bench_relay(
    path: str,
    rate: float,
    storers: int,
    n: int,
    size: int,
    *,
    defer: float | None,
    lazy_removes: bool = False,
) -> dict[str, float]:
    """The spool's traffic in a relay: paced stores from ``storers`` sessions; a manager loop
    that marks every stored message delivered (one call) and then removes them."""
    kw: dict[str, float | bool] = {} if defer is None else {"defer": defer}
    if lazy_removes:
        kw["sync_removes"] = False
    spool = await open_kind(path, **kw)  # type: ignore[arg-type]
    writer_id = spool._wq._thread.ident
    envs = [envelope(i) for i in range(n)]
    bodies = [body(i, size) for i in range(64)]
    loop = asyncio.get_running_loop()
    stored: list[int] = []
    wake = asyncio.Event()
    counter = iter(range(n))
    done = 0
    t_start = loop.time() + 0.05

    async def storer() -> None:
        for i in counter:
            delay = t_start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stored.append(await spool.store(envs[i], bodies[i % 64]))
            wake.set()

    async def manager() -> None:
        nonlocal done
        while done < n:
            await wake.wait()
            wake.clear()
            ids, stored[:] = stored[:], []
            await spool.mark(
                [
                    RcptUpdate(
                        msg_id=m,
                        rcpt_index=0,
                        state=RcptState.DELIVERED,
                        attempts=1,
                        detail="250 ok",
                    )
                    for m in ids
                ]
            )
            await asyncio.gather(*(spool.remove(m) for m in ids))
            done += len(ids)

    cpu0, wcpu0, t0 = time.process_time(), _thread_cpu(writer_id), time.perf_counter()
    await asyncio.gather(manager(), *(storer() for _ in range(storers)))
    wall = time.perf_counter() - t0
    cpu, wcpu = time.process_time() - cpu0, _thread_cpu(writer_id) - wcpu0
    stats = spool.write_stats
    await spool.close()
    return {
        "us_per_msg": cpu / n * 1e6,
        "writer_us_per_msg": wcpu / n * 1e6,
        "msgs_per_s": n / wall,
        "commits_per_msg": stats.batches / n,
    }


async def bench_mark(path: str, n: int, batch: int, concurrency: int) -> dict[str, float]:
    spool = await open_kind(path, max_batch=4096)
    ids = list(await asyncio.gather(*(spool.store(envelope(i), body(i, 2048)) for i in range(n))))
    chunks = [ids[i : i + batch] for i in range(0, n, batch)]
    it = iter(chunks)

    async def marker(state: RcptState) -> None:
        for chunk in it:
            await spool.mark(
                [
                    RcptUpdate(msg_id=m, rcpt_index=0, state=state, attempts=1, next_attempt=1.9e9)
                    for m in chunk
                ]
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(marker(RcptState.QUEUED) for _ in range(concurrency)))
    mark_rate = n / (time.perf_counter() - t0)
    it = iter(chunks)
    t0 = time.perf_counter()
    await asyncio.gather(*(marker(RcptState.DELIVERED) for _ in range(concurrency)))
    final_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    await asyncio.gather(*(spool.remove(m) for m in ids))
    remove_rate = n / (time.perf_counter() - t0)
    await spool.close()
    return {
        "defer_marks_per_s": mark_rate,
        "final_marks_per_s": final_rate,
        "removes_per_s": remove_rate,
    }


async def build(path: str, n: int, size: int) -> None:
    spool = await open_kind(path, max_batch=20_000)
    have = sum(1 for _ in spool.recover())
    b = body(0, size)
    step = 20_000
    t0 = time.perf_counter()
    for start in range(have, n, step):
        await asyncio.gather(
            *(spool.store(envelope(i), b) for i in range(start, min(n, start + step)))
        )
        print(f"  built {min(n, start + step)}/{n}", file=sys.stderr, end="\r")
    print(f"built {n - have} messages in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    await spool.close()


async def mark_all_deferred(path: str) -> None:
    spool = await open_kind(path, max_batch=64)
    ids = [m.msg_id for m in spool.recover()]
    t0 = time.perf_counter()
    step = 10_000
    await asyncio.gather(
        *(
            spool.mark(
                [
                    RcptUpdate(
                        msg_id=m,
                        rcpt_index=0,
                        state=RcptState.QUEUED,
                        attempts=1,
                        next_attempt=1.9e9,
                        detail="451 4.7.1 try again later",
                    )
                    for m in ids[i : i + step]
                ]
            )
            for i in range(0, len(ids), step)
        )
    )
    print(f"marked {len(ids)} deferred in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    await spool.close()


def measure_recovery(path: str, keep: bool) -> None:
    """Runs in a fresh process: open + recover into a queue index; prints one line."""

    async def main() -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        spool = await open_kind(path)
        t_open = time.perf_counter() - t0
        index: dict[str, list[int]] = {}
        kept = []
        count = 0
        for m in spool.recover():
            env = m.envelope
            key = env.recipients[0].address.rpartition("@")[2] + "/" + (env.vmta or "default")
            q = index.get(key)
            if q is None:
                q = index[key] = []
            q.append(m.msg_id)
            if keep:
                kept.append(m)
            count += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"recovered {count} messages into {len(index)} queues: open {t_open:.2f} s, "
            f"total {wall:.2f} s wall, {cpu:.2f} s CPU, peak RSS {rss:.0f} MB"
            f"{' (keeping every SpooledMessage)' if keep else ' (index of ids only)'} [{KIND}]"
        )
        await spool.close()

    use_uvloop()
    asyncio.run(main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["store", "mark", "cycle", "relay", "recover", "_measure"])
    p.add_argument("--concurrency", default="1,20,50,100")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--linger", type=float, default=None, help="seconds (default: the spool's)")
    p.add_argument("--batch", type=int, default=100, help="updates per mark() call")
    p.add_argument("--batches", default="10,100", help="cycle: messages per commit")
    p.add_argument("--rate", type=float, default=1700.0, help="relay: stores per second")
    p.add_argument("--defer", type=float, default=None, help="seconds (default: the spool's)")
    p.add_argument("--repeat", type=int, default=5, help="cycle: runs per setting (median)")
    p.add_argument("--recover-n", type=int, default=100_000)
    p.add_argument("--dir", default=None, help="spool directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="recover: keep every SpooledMessage")
    p.add_argument(
        "--mark-deferred",
        action="store_true",
        help="recover: first mark every recipient deferred (attempts=1, next_attempt set)",
    )
    p.add_argument("--drop-caches", action="store_true", help="recover: cold page cache (root)")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--kind", choices=["sqlite", "segment"], default="sqlite")
    p.add_argument(
        "--lazy-removes",
        action="store_true",
        help="relay, segment only: sync_removes=False (removes ride on the next fsync)",
    )
    a = p.parse_args()
    global KIND
    KIND = a.kind
    if a.what == "_measure":
        measure_recovery(a.dir, a.keep)
        return
    if not a.no_uvloop:
        use_uvloop()
    base = a.dir or tempfile.mkdtemp(
        prefix="sluice-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")
    )
    try:
        if a.what == "store":
            for c in (int(x) for x in a.concurrency.split(",")):
                path = os.path.join(base, f"store-{c}")
                r = asyncio.run(bench_store(path, c, a.n, a.size, a.linger))
                shutil.rmtree(path)
                print(
                    f"[{KIND}] store size={a.size} concurrency={c:4d}: "
                    f"{r['msgs_per_s']:8.0f} msgs/s, "
                    f"{r['cpu_s_per_1000']:.3f} CPU s/1000, {r['commits']:.0f} commits, "
                    f"avg batch {r['avg_batch']:.1f}"
                )
        elif a.what == "cycle":
            for b in (int(x) for x in a.batches.split(",")):
                for mark in (False, True):
                    runs = []
                    for k in range(a.repeat):
                        path = os.path.join(base, f"cycle-{b}-{k}")
                        runs.append(asyncio.run(bench_cycle(path, b, a.n, a.size, mark)))
                        shutil.rmtree(path)
                    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                    spread = sorted(round(r["us_per_msg"]) for r in runs)
                    print(
                        f"[{KIND}] cycle size={a.size} batch={b:4d} "
                        f"store+{'mark+' if mark else ''}remove: "
                        f"{med['us_per_msg']:6.1f} CPU us/msg (runs {spread}), "
                        f"writer thread {med['writer_us_per_msg']:6.1f}, "
                        f"system {med['sys_us_per_msg']:5.1f}; {med['msgs_per_s']:6.0f} msgs/s"
                    )
        elif a.what == "relay":
            c = int(a.concurrency.split(",")[-1]) if "," in a.concurrency else int(a.concurrency)
            runs = []
            for k in range(a.repeat):
                path = os.path.join(base, f"relay-{k}")
                runs.append(
                    asyncio.run(
                        bench_relay(
                            path,
                            a.rate,
                            c,
                            a.n,
                            a.size,
                            defer=a.defer,
                            lazy_removes=a.lazy_removes,
                        )
                    )
                )
                shutil.rmtree(path)
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            spread = sorted(round(r["us_per_msg"]) for r in runs)
            print(
                f"[{KIND}] relay size={a.size} rate={a.rate:.0f}/s storers={c}: "
                f"{med['us_per_msg']:6.1f} CPU us/msg (runs {spread}), "
                f"writer thread {med['writer_us_per_msg']:6.1f}; "
                f"{med['commits_per_msg']:.2f} commits/msg; {med['msgs_per_s']:6.0f} msgs/s"
            )
        elif a.what == "mark":
            path = os.path.join(base, "mark")
            r = asyncio.run(bench_mark(path, a.n, a.batch, 10))
            shutil.rmtree(path)
            print(
                f"[{KIND}] marks (batches of {a.batch}, 10 concurrent callers): "
                f"deferrals {r['defer_marks_per_s']:.0f}/s, finals {r['final_marks_per_s']:.0f}/s; "
                f"removes (all concurrent) {r['removes_per_s']:.0f}/s"
            )
        else:
            asyncio.run(build(base, a.recover_n, a.size))
            if a.mark_deferred:
                asyncio.run(mark_all_deferred(base))
            if a.drop_caches:
                os.sync()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
            cmd = [sys.executable, __file__, "_measure", "--dir", base, "--kind", a.kind]
            if a.keep:
                cmd.append("--keep")
            subprocess.run(cmd, check=True)
    finally:
        if a.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
