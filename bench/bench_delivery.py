"""Benchmark of the delivery client: N messages of 2 KB over C reused sessions into smtp-sink.

Starts Postfix's ``smtp-sink -c`` on 127.0.0.x and a free port, opens C sessions with
``sluice.delivery.open_session`` (literal route, source 127.0.0.2), runs ``deliver`` with
batches of B transfers on each session until N messages are delivered, and prints msgs/s
and the CPU seconds of this Python process per 1,000 messages (sessions are opened before
the clock starts; closing is included), and the socket writes ``deliver`` made per message
(with PIPELINING, batches of B take B + 1 writes: each next transfer's MAIL, RCPT and DATA
ride behind the previous final dot).

    python bench/bench_delivery.py [-n 20000] [-c 20] [-b 10] [--size 2048] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvloop

from sluice.delivery import DeliverySettings, Session, Transfer, TransferRcpt, open_session
from sluice.routing import FakeResolver, HostSpec, RouteSettings
from sluice.sched.outcome import OutcomeKind

SINK_HOST = "127.0.0.7"
SOURCE = "127.0.0.2"


def make_body(size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    head = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: bench\r\nMessage-ID: <1@x.test>\r\n\r\n"
    body = head + line * ((size - len(head)) // len(line) + 1)
    return body[: size - 2] + b"\r\n"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_sink(host: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    exe = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    argv = [exe, "-c", f"{host}:{port}", "1000"]
    if os.geteuid() == 0:
        argv[1:1] = ["-u", "nobody"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection((host, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)


async def run(
    n: int, conns: int, batch: int, size: int, port: int
) -> tuple[int, float, float, int]:
    settings = DeliverySettings(
        ehlo_hostname="bench.sluice.test",
        source_address=SOURCE,
        route=RouteSettings(route=HostSpec(name=SINK_HOST, port=port, literal=True)),
    )
    resolver = FakeResolver({})
    sessions: list[Session] = []
    for i in range(conns):
        opened = await open_session("sink.test", settings, resolver, random.Random(i))
        assert isinstance(opened, Session), opened
        sessions.append(opened)
    body = make_body(size)
    rcpt = (TransferRcpt(index=0, address="user@sink.test"),)
    transfers = [Transfer(msg_id=i, sender="bench@x.test", rcpts=rcpt, body=body) for i in range(n)]
    per = n // conns
    delivered = 0

    async def worker(session: Session, mine: list[Transfer]) -> int:
        ok = 0
        for k in range(0, len(mine), batch):
            for report in await session.deliver(mine[k : k + batch]):
                ok += sum(r.outcome.kind is OutcomeKind.DELIVERED for r in report.results)
        await session.close()
        return ok

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(worker(s, transfers[i * per : (i + 1) * per]))
            for i, s in enumerate(sessions)
        ]
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    delivered = sum(t.result() for t in tasks)
    return delivered, elapsed, cpu, sum(s.writes for s in sessions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="messages")
    ap.add_argument("-c", type=int, default=20, help="sessions")
    ap.add_argument("-b", type=int, default=10, help="transfers per deliver() call")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = ap.parse_args()
    port = free_port(SINK_HOST)
    with smtp_sink(SINK_HOST, port):
        coro = run(args.n, args.c, args.b, args.size, port)
        if args.uvloop:
            delivered, elapsed, cpu, writes = uvloop.run(coro)
        else:
            delivered, elapsed, cpu, writes = asyncio.run(coro)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"delivery {loop}: {delivered} msgs of {args.size} B over {args.c} sessions "
        f"(batch {args.b}) in {elapsed:.2f}s: {delivered / elapsed:,.0f} msgs/s, "
        f"{cpu / delivered * 1000:.3f} CPU s per 1,000 msgs, "
        f"{writes / delivered:.2f} writes per msg"
    )
    if delivered != args.n - args.n % args.c:
        sys.exit(f"only {delivered} delivered")


if __name__ == "__main__":
    main()
