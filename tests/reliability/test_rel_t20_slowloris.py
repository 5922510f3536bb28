"""T20 (scaled): slow and idle clients neither starve service nor outlive their deadlines.

Config: ``smtp-command-timeout 5s``, ``smtp-idle-timeout 5s``, ``max-smtp-in-per-client 30``.
From each of 127.0.0.66–.70: 20 sockets trickling ``EHLO …`` one byte every 2 s and 20
sockets idle after EHLO (200 in all, 40 per address). Meanwhile a legitimate client at
127.0.0.1 sends one message every 0.5 s, each in a new session.
Pass: every legitimate transaction gets 250; the 10 sockets per address above the cap get
``421 4.7.0`` at once; every other trickle or idle socket gets ``421 4.4.2`` and is closed
within the 5 s deadline (plus the sweeper's slack), and not before it; RSS stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.injectors import RawSmtpClient
from tests.reliability.rel_support import (
    fd_count,
    log_problems,
    proc_status,
    read_spool,
    start_daemon,
)

pytestmark = pytest.mark.interop

SOURCES = tuple(f"127.0.0.{n}" for n in range(66, 71))
PER_SOURCE_TRICKLE = 20
PER_SOURCE_IDLE = 20
PER_CLIENT_CAP = 30
DEADLINE = 5.0
#: The sweeper checks deadlines at most every second (docs/intake.md), plus scheduling.
SLACK = 2.0
TRICKLE_EVERY = 2.0
LEGIT_EVERY = 0.5


@dataclass(slots=True)
class _Outcome:
    kind: str  # "trickle" or "idle"
    greeting: str = ""
    last_reply: str = ""
    #: Seconds from the start of the deadline (first trickled byte / EHLO answered) to EOF.
    lived: float = -1.0


async def _first_line(reader: asyncio.StreamReader) -> str:
    return (await reader.readline()).decode("ascii", "replace").strip()


async def _attacker(port: int, source: str, kind: str, hold: float) -> _Outcome:
    out = _Outcome(kind)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        out.greeting = await _first_line(reader)
        if not out.greeting.startswith("220"):
            return out
        if kind == "idle":
            writer.write(b"EHLO idle.example\r\n")
            while True:
                line = await _first_line(reader)
                if line.startswith("250 "):
                    break
            start = time.monotonic()
        else:
            start = time.monotonic()

            async def trickle() -> None:
                for byte in b"EHLO trickle.example.with.a.long.name\r\n":
                    writer.write(bytes([byte]))
                    await asyncio.sleep(TRICKLE_EVERY)

            dripping = asyncio.ensure_future(trickle())
        last = ""
        while True:
            raw = await asyncio.wait_for(reader.readline(), hold)
            if not raw:
                break
            last = raw.decode("ascii", "replace").strip()
        out.lived = time.monotonic() - start
        out.last_reply = last
        if kind == "trickle":
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await dripping
        return out
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _attack(port: int) -> list[_Outcome]:
    tasks = []
    for i in range(max(PER_SOURCE_TRICKLE, PER_SOURCE_IDLE)):
        for source in SOURCES:  # interleave so each address passes its cap with both kinds
            if i < PER_SOURCE_TRICKLE:
                tasks.append(asyncio.ensure_future(_attacker(port, source, "trickle", 30)))
            if i < PER_SOURCE_IDLE:
                tasks.append(asyncio.ensure_future(_attacker(port, source, "idle", 30)))
            await asyncio.sleep(0.002)
    return list(await asyncio.gather(*tasks))


def test_slowloris_and_idle_clients(tmp_path: Path) -> None:
    d = start_daemon(
        tmp_path,
        extra=(
            "smtp-command-timeout 5s",
            "smtp-idle-timeout 5s",
            f"max-smtp-in-per-client {PER_CLIENT_CAP}",
        ),
    )
    rss0 = proc_status(d.pid)["VmRSS"]
    fds0 = fd_count(d.pid)
    legit: list[tuple[int, float]] = []
    stop = threading.Event()

    def legitimate() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                with RawSmtpClient(d.host, d.port, timeout=DEADLINE) as c:
                    c.ehlo()
                    body = f"Subject: legit {n}\r\n\r\nhello\r\n".encode()
                    reply, _ = c.send_message("legit@src.test", ["r@x.test"], body)
                    c.quit()
                legit.append((reply.code, time.monotonic() - t0))
            except OSError:
                legit.append((0, time.monotonic() - t0))
            stop.wait(max(0.0, LEGIT_EVERY - (time.monotonic() - t0)))

    sender = threading.Thread(target=legitimate)
    sender.start()
    try:
        outcomes = asyncio.run(_attack(d.port))
        peak_rss = proc_status(d.pid)["VmHWM"]
    finally:
        stop.set()
        sender.join(30)
    time.sleep(0.5)
    fds1 = fd_count(d.pid)
    assert d.proc.stop() == 0

    capped = [o for o in outcomes if not o.greeting.startswith("220")]
    served = [o for o in outcomes if o.greeting.startswith("220")]
    lat = sorted(t for _, t in legit)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    lived = [o.lived for o in served]
    print(
        f"T20: legit {len(legit)} sent, {sum(1 for c, _ in legit if c == 250)} OK,"
        f" p50 {statistics.median(lat):.3f}s p99 {p99:.3f}s; capped {len(capped)};"
        f" attackers closed after {min(lived):.2f}–{max(lived):.2f}s;"
        f" RSS {rss0} → peak {peak_rss} kB; fds {fds0} → {fds1}"
    )
    assert len(legit) >= 10
    assert all(code == 250 for code, _ in legit)
    over = len(SOURCES) * (PER_SOURCE_TRICKLE + PER_SOURCE_IDLE - PER_CLIENT_CAP)
    assert len(capped) == over
    assert all(o.greeting.startswith("421 4.7.0") for o in capped), capped[:3]
    assert all(o.last_reply.startswith("421 4.4.2") for o in served), served[:3]
    assert all(DEADLINE - 0.5 <= t <= DEADLINE + SLACK for t in lived), sorted(lived)
    assert peak_rss - rss0 < 50_000
    assert abs(fds1 - fds0) <= 10
    assert len(read_spool(d.spool).messages) == len(legit)
    assert log_problems(d.log()) == []
