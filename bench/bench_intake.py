"""Intake benchmark: Postfix's smtp-source against the listener with the durable SQLite spool.

Starts the listener (uvloop, real ``SqliteSpool`` in a temp dir on a real disk) in a child
process, drives it with ``smtp-source -s 20 -m N -l 2000`` (one message per connection,
then again with ``-d``: many messages per connection), and prints msgs/s and the listener
process's CPU seconds per 1,000 messages (user + system, all its threads, from
/proc/PID/stat). Every stored message is counted by the hand-off hook; the run fails if the
count differs from N.

Usage: python bench/bench_intake.py [-n 20000] [-c 20] [--size 2000] [--dir /var/tmp]
       [--reuse-only | --no-reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import uvloop

from sluice.daemon.system_clock import SystemClock
from sluice.intake.inject import Injector
from sluice.intake.listener import Hooks, IntakeServer, ListenerLimits
from sluice.intake.policy import SourcePolicyMap
from sluice.spool import SqliteSpool


def _serve(spool_dir: str) -> None:
    """Child: run the listener until SIGTERM; print READY PORT, then STORED COUNT at exit."""

    async def main() -> None:
        spool = await SqliteSpool.open(spool_dir)
        stored = 0

        def accepted(msg_id: int, envelope: object) -> None:
            nonlocal stored
            stored += 1

        clock = SystemClock()
        server = IntakeServer(
            injector=Injector(spool=spool, clock=clock, hostname="bench.test"),
            policies=SourcePolicyMap(),
            clock=clock,
            limits=ListenerLimits(total_max_smtp_in=2000, max_smtp_in_per_client=2000),
            hooks=Hooks(on_accepted=accepted),
        )
        _, port = await server.listen("127.0.0.1", 0)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(f"READY {port}", flush=True)
        await stop.wait()
        await server.shutdown()
        await spool.close()
        print(f"STORED {stored} batches={spool.write_stats.batches}", flush=True)

    uvloop.run(main())


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _run(n: int, conc: int, size: int, reuse: bool, workdir: str) -> tuple[float, float, int]:
    spool_dir = tempfile.mkdtemp(prefix="sluice-bench-intake-", dir=workdir)
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", spool_dir],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        if not line or line[0] != "READY":
            raise SystemExit(f"listener did not start: {line}")
        port = int(line[1])
        cmd = ["smtp-source", "-s", str(conc), "-m", str(n), "-l", str(size)]
        if reuse:
            cmd.append("-d")
        cmd += ["-f", "a@x.test", "-t", "b@sink.test", f"127.0.0.1:{port}"]
        cpu0 = _cpu_seconds(child.pid)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(child.pid) - cpu0
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
        stored = int(out.split()[1])
        return elapsed, cpu, stored
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(spool_dir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="messages per run")
    ap.add_argument("-c", type=int, default=20, help="concurrent sessions")
    ap.add_argument("--size", type=int, default=2000, help="message length (smtp-source -l)")
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/var/tmp"), help="spool parent")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--reuse-only", action="store_true")
    mode.add_argument("--no-reuse", action="store_true")
    args = ap.parse_args()
    modes = [False, True]
    if args.reuse_only:
        modes = [True]
    elif args.no_reuse:
        modes = [False]
    failed = False
    for reuse in modes:
        elapsed, cpu, stored = _run(args.n, args.c, args.size, reuse, args.dir)
        label = "reuse" if reuse else "one-per-connection"
        print(
            f"RESULT mode={label} n={args.n} conc={args.c} size={args.size} "
            f"stored={stored} elapsed_s={elapsed:.2f} msgs_per_s={args.n / elapsed:.0f} "
            f"cpu_s={cpu:.2f} cpu_s_per_1000={1000 * cpu / args.n:.3f}"
        )
        failed |= stored != args.n
    if failed:
        raise SystemExit("stored count differs from messages sent")


if __name__ == "__main__":
    main()
