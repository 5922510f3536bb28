"""Intake benchmark: Postfix's smtp-source against the listener with the durable SQLite spool.

Starts the listener (uvloop, real ``SqliteSpool`` in a temp dir on a real disk) in a child
process, drives it with ``smtp-source -s 20 -m N -l 2000`` (one message per connection,
then again with ``-d``: many messages per connection), and prints msgs/s and the listener
process's CPU seconds per 1,000 messages (user + system, all its threads, from
/proc/PID/stat), and the main thread's share (``main_cpu_s_per_1000``: the event loop that
runs the SMTP sessions; the rest is the spool's writer thread). Every stored message is
counted by the hand-off hook; the run fails if the count differs from N.

``--inproc`` measures the session code alone, without sockets or a spool: SmtpSession
objects driven through a null transport on a uvloop loop, the store resolving after one
loop turn (a future, as from the spools and an intake worker's link). It prints CPU
microseconds per session (connect, greeting, HELO or EHLO, MAIL, RCPT, DATA, content, dot,
QUIT) and transport writes per session, for smtp-source's lock-step dialogue and for a
PIPELINING client (MAIL, RCPT and DATA in one read).

Usage: python bench/bench_intake.py [-n 20000] [-c 20] [--size 2000] [--dir /var/tmp]
       [--reuse-only | --no-reuse | --inproc [--repeat 5]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import uvloop

from sluice.daemon.system_clock import SystemClock
from sluice.intake.inject import Injector
from sluice.intake.listener import Hooks, IntakeServer, ListenerLimits
from sluice.intake.policy import SourcePolicyMap
from sluice.intake.session import SmtpSession
from sluice.message import Envelope, MessageId
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


def _stat_cpu(path: str) -> float:
    with open(path, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """(the whole process, its main thread): CPU seconds so far."""
    return _stat_cpu(f"/proc/{pid}/stat"), _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def _run(
    n: int, conc: int, size: int, reuse: bool, workdir: str
) -> tuple[float, float, float, int]:
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
        cpu0, main0 = _cpu_seconds(child.pid)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        elapsed = time.perf_counter() - t0
        cpu1, main1 = _cpu_seconds(child.pid)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
        stored = int(out.split()[1])
        return elapsed, cpu1 - cpu0, main1 - main0, stored
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(spool_dir, ignore_errors=True)


# --- in process: the session code alone ------------------------------------------------


class _NullTransport:
    """Just enough of a transport for SmtpSession; counts writes."""

    __slots__ = ("closed", "writes")

    def __init__(self) -> None:
        self.closed = False
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default


class _LoopTurnStore:
    """A store that answers after one loop turn (the spool's thread is not measured).

    Like the spools and an intake worker's link it has ``store_nowait`` (a future, no
    coroutine), which the injector uses when present; ``store`` is the same, awaited.
    """

    def __init__(self) -> None:
        self.next_id = 1

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        msg_id: MessageId = await self.store_nowait(envelope, body)
        return msg_id

    def store_nowait(self, envelope: Envelope, body: bytes) -> asyncio.Future[MessageId]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[MessageId] = loop.create_future()
        loop.call_soon(future.set_result, self.next_id)
        self.next_id += 1
        return future


def smtp_source_message(size: int) -> bytes:
    """Content shaped like ``smtp-source -l SIZE`` sends (a few headers, short lines)."""
    head = b"From: <a@x.test>\r\nTo: <b@sink.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    head += b"Message-Id: <1.2@vm>\r\nSubject: bench\r\n\r\n"
    line = b"La de da de da 1.\r\n"
    return head + line * max(1, size // len(line))


async def _inproc(n: int, size: int, pipelined: bool) -> tuple[float, float]:
    """CPU microseconds and transport writes per session."""
    stored = 0

    def accepted(msg_id: int, envelope: object) -> None:
        nonlocal stored
        stored += 1

    clock = SystemClock()
    server = IntakeServer(
        injector=Injector(spool=_LoopTurnStore(), clock=clock, hostname="bench.test"),
        policies=SourcePolicyMap(),
        clock=clock,
        hooks=Hooks(on_accepted=accepted),
    )
    content = smtp_source_message(size) + b".\r\n"
    if pipelined:
        script = [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<a@x.test> SIZE=2048\r\nRCPT TO:<b@sink.test>\r\nDATA\r\n",
            content,
        ]
    else:
        script = [
            b"HELO vm\r\n",
            b"MAIL FROM:<a@x.test>\r\n",
            b"RCPT TO:<b@sink.test>\r\n",
            b"DATA\r\n",
            content,
        ]
    writes = 0
    t0 = time.process_time()
    for i in range(n):
        transport = _NullTransport()
        session = SmtpSession(server)
        session.connection_made(transport)  # type: ignore[arg-type]
        for data in script:
            session.data_received(data)
        while stored <= i:
            await asyncio.sleep(0)
        session.data_received(b"QUIT\r\n")
        session.connection_lost(None)
        writes += transport.writes
        if not transport.closed:
            raise SystemExit("session did not close after QUIT")
    cpu = time.process_time() - t0
    return 1e6 * cpu / n, writes / n


def main_inproc(n: int, size: int, repeat: int) -> None:
    """Each shape ``repeat`` times; the median (the machine is shared: runs are noisy)."""
    for pipelined in (False, True):
        runs = [uvloop.run(_inproc(n, size, pipelined)) for _ in range(repeat)]
        us = statistics.median(r[0] for r in runs)
        writes = runs[0][1]
        label = "inproc-pipelined" if pipelined else "inproc-lockstep"
        print(
            f"RESULT mode={label} n={n} size={size} repeat={repeat} cpu_us_per_msg={us:.1f} "
            f"min={min(r[0] for r in runs):.1f} writes_per_msg={writes:.1f}"
        )


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
    mode.add_argument("--inproc", action="store_true", help="the session code alone")
    ap.add_argument("--repeat", type=int, default=5, help="--inproc runs per shape (median)")
    args = ap.parse_args()
    if args.inproc:
        main_inproc(args.n, args.size, args.repeat)
        return
    modes = [False, True]
    if args.reuse_only:
        modes = [True]
    elif args.no_reuse:
        modes = [False]
    failed = False
    for reuse in modes:
        elapsed, cpu, main_cpu, stored = _run(args.n, args.c, args.size, reuse, args.dir)
        label = "reuse" if reuse else "one-per-connection"
        print(
            f"RESULT mode={label} n={args.n} conc={args.c} size={args.size} "
            f"stored={stored} elapsed_s={elapsed:.2f} msgs_per_s={args.n / elapsed:.0f} "
            f"cpu_s={cpu:.2f} cpu_s_per_1000={1000 * cpu / args.n:.3f} "
            f"main_cpu_s_per_1000={1000 * main_cpu / args.n:.3f}"
        )
        failed |= stored != args.n
    if failed:
        raise SystemExit("stored count differs from messages sent")


if __name__ == "__main__":
    main()
