"""Benchmark: how long ``sluice run`` takes to recover a big spool and accept mail again.

Builds (once; reused when ``--dir`` already holds N messages) a spool of N queued
single-recipient 2 KB messages directly through the spool (``--kind segment``, the default
format, or ``sqlite``; an existing ``--dir`` keeps its own), 500 destination domains, then
starts ``python -m sluice run --no-deliver -c CONF --spool DIR`` and measures, from the
spawn: the first 220 greeting, and the 250 to one new message. Prints those times, the
daemon's own recovery/ready log lines, and its peak RSS (VmHWM) read from /proc just
before it is stopped. Asserts nothing (issue 3 target: 1,000,000 messages → accepting
within 30 s).

    python bench/bench_recovery.py --n 100000
    python bench/bench_recovery.py --n 1000000 --dir /var/tmp/sluice-seg-1m [--drop-caches]
    python bench/bench_recovery.py --n 1000000 --kind sqlite --dir /var/tmp/sluice-spool-1m
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time

import uvloop

from sluice.message import Envelope, Recipient
from sluice.spool import open_spool, spool_kind_at

DOMAINS = 500
BUILD_STEP = 20_000


def envelope(i: int) -> Envelope:
    return Envelope(
        sender="bounces@sender.example",
        recipients=(Recipient(address=f"user{i}@dest{i % DOMAINS}.example"),),
        source_ip="127.0.0.1",
        source_helo="injector.local",
        arrival=time.time(),
    )


def body(size: int) -> bytes:
    head = b"Subject: recovery bench\r\n\r\n"
    return head + b"x" * max(0, size - len(head) - 2) + b"\r\n"


async def build(path: str, n: int, size: int, kind: str) -> None:
    kind = spool_kind_at(path) or kind
    spool = await open_spool(path, kind=kind, max_batch=BUILD_STEP)
    have = sum(1 for _ in spool.recover())
    data = body(size)
    t0 = time.perf_counter()
    for start in range(have, n, BUILD_STEP):
        stop = min(n, start + BUILD_STEP)
        await asyncio.gather(*(spool.store(envelope(i), data) for i in range(start, stop)))
        print(f"  built {stop}/{n}", file=sys.stderr, end="\r")
    if have < n:
        print(f"built {n - have} messages in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    else:
        print(f"reusing {have} messages in {path}", file=sys.stderr)
    await spool.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(workdir: str, port: int) -> str:
    path = os.path.join(workdir, "bench-recovery.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            f"smtp-listener 127.0.0.1:{port}\n"
            "<source 127.0.0.1>\n    always-allow-relaying yes\n</source>\n"
        )
    return path


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def wait_greeting(port: int, proc: subprocess.Popen[bytes], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sluice exited with {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                if s.makefile("rb").readline().startswith(b"220"):
                    return time.monotonic()
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"no greeting within {timeout} s")


def measure(spool_dir: str, workdir: str, timeout: float) -> None:
    port = free_port()
    conf = write_config(workdir, port)
    log_path = os.path.join(workdir, "sluice-stderr.log")
    argv = [sys.executable, "-m", "sluice", "run", "--no-deliver", "-c", conf]
    argv += ["--spool", spool_dir]
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        t_greet = wait_greeting(port, proc, timeout) - t0
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail("a@src.test", ["b@dest1.example"], b"Subject: after\r\n\r\nx\r\n")
        t_accept = time.monotonic() - t0
        hwm = status_kb(proc.pid, "VmHWM")
        rss = status_kb(proc.pid, "VmRSS")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for pattern in (r"spool .* recovered: .*", r"sluice ready in .*"):
        m = re.search(pattern, text)
        if m:
            print(f"daemon log: {m.group(0)}")
    print(
        f"restart: 220 after {t_greet:.2f} s, 250 to a new message after {t_accept:.2f} s"
        f" (from spawn); daemon peak RSS (VmHWM) {hwm / 1024:.0f} MB, RSS {rss / 1024:.0f} MB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="queued messages in the spool")
    p.add_argument("--size", type=int, default=2048, help="message size in octets")
    p.add_argument("--dir", default=None, help="spool directory (kept; default: a temp dir)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this long")
    p.add_argument("--drop-caches", action="store_true", help="cold page cache (root)")
    p.add_argument("--kind", default="segment", help="format of a new spool: segment, sqlite")
    a = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="sluice-bench-recovery-", dir="/var/tmp")
    spool_dir = a.dir or os.path.join(workdir, "spool")
    try:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        asyncio.run(build(spool_dir, a.n, a.size, a.kind))
        if a.drop_caches:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as f:
                f.write("3\n")
        measure(spool_dir, workdir, a.timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
