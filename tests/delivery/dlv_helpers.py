"""Helpers for the delivery tests: Postfix's smtp-sink as a receiver, settings, transfers.

``SmtpSink(host, *flags)`` runs ``smtp-sink`` on ``host`` and a free port with a dump
directory (``-d``), as ``nobody`` when we are root (smtp-sink insists on ``-u``), waits until
it accepts connections, and parses what it dumped (``dumps()``: one :class:`Dump` per
transaction: client address, HELO, MAIL and RCPT arguments, the message as received).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sluice.delivery import (
    DeliverySettings,
    Session,
    Transfer,
    TransferRcpt,
    TransferReport,
    open_session,
)
from sluice.routing import FakeResolver, HostSpec, Resolver, RouteSettings
from sluice.sched.outcome import OutcomeKind

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
#: Per-test ceiling: a hung test fails instead of blocking the suite.
TEST_TIMEOUT = 30.0

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run ``coro`` in a fresh event loop with the per-test ceiling."""

    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT):
            return await coro

    return asyncio.run(bounded())


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Dump:
    client_addr: str = ""
    helo: str = ""
    mail: str = ""
    rcpts: list[str] = field(default_factory=list)
    message: bytes = b""


class SmtpSink:
    """Postfix's smtp-sink on ``host``:<free port> with ``flags``; a context manager."""

    def __init__(self, host: str, *flags: str) -> None:
        self.host = host
        self.flags = flags
        self.port = 0
        self._dir = tempfile.TemporaryDirectory(prefix="sink-")
        self.dump_dir = Path(self._dir.name)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        os.chmod(self.dump_dir, 0o777)
        argv = [SMTP_SINK, *self.flags, "-d", f"{self.dump_dir}/%H%M%S."]
        if os.geteuid() == 0:
            argv[1:1] = ["-u", "nobody"]
        for _ in range(5):
            self.port = free_port(self.host)
            proc = subprocess.Popen(
                [*argv, f"{self.host}:{self.port}", "64"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_listening(proc):
                self._proc = proc
                return self
            _stop(proc)
        raise RuntimeError("smtp-sink did not start")

    def _wait_listening(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                # A bare TCP probe would count as a session; look at the listen table instead.
                if _listening(self.host, self.port):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            _stop(self._proc)
        self._dir.cleanup()

    def dumps(self) -> list[Dump]:
        out = []
        for path in sorted(self.dump_dir.rglob("*")):
            if path.is_file():
                out.extend(_parse_dump(path.read_bytes()))
        return out


def _listening(host: str, port: int) -> bool:
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(
            line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:]
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def _parse_dump(raw: bytes) -> list[Dump]:
    dumps: list[Dump] = []
    for chunk in raw.split(b"X-Client-Addr: ")[1:]:
        d = Dump()
        head, _, rest = chunk.partition(b"\nReceived: ")
        lines = head.split(b"\n")
        d.client_addr = lines[0].decode()
        for line in lines[1:]:
            key, _, value = line.decode().partition(": ")
            if key == "X-Helo-Args":
                d.helo = value
            elif key == "X-Mail-Args":
                d.mail = value
            elif key == "X-Rcpt-Args":
                d.rcpts.append(value)
        # The Received header smtp-sink adds is folded over three lines.
        _, _, message = rest.partition(b";")
        d.message = message.split(b"\n", 2)[2] if message.count(b"\n") >= 2 else b""
        dumps.append(d)
    return dumps


# --- settings and transfers -----------------------------------------------------------------


def literal_settings(
    hosts: Sequence[tuple[str, int]], source: str | None = "127.0.0.2", **kw: object
) -> DeliverySettings:
    """Settings that send to these (host, port) in order (``smtp-hosts [h]:p, ...``)."""
    specs = tuple(HostSpec(name=h, port=p, literal=True) for h, p in hosts)
    route_kw = {k[6:]: v for k, v in kw.items() if k.startswith("route_")}
    other = {k: v for k, v in kw.items() if not k.startswith("route_")}
    route = RouteSettings(smtp_hosts=specs, **route_kw)  # type: ignore[arg-type]
    return DeliverySettings(
        ehlo_hostname="out.sluice.test",
        source_address=source,
        route=route,
        **other,  # type: ignore[arg-type]
    )


NO_DNS: Resolver = FakeResolver({})


def transfer(
    msg_id: int,
    rcpts: Sequence[str] = ("rcpt@sink.test",),
    body: bytes = b"Subject: test\r\n\r\nhello\r\n",
    sender: str = "sender@sluice.test",
    **kw: object,
) -> Transfer:
    return Transfer(
        msg_id=msg_id,
        sender=sender,
        rcpts=tuple(TransferRcpt(index=i, address=a) for i, a in enumerate(rcpts)),
        body=body,
        **kw,  # type: ignore[arg-type]
    )


async def session(
    settings: DeliverySettings, domain: str = "sink.test", resolver: Resolver = NO_DNS
) -> Session:
    opened = await open_session(domain, settings, resolver, random.Random(7))
    assert isinstance(opened, Session), opened
    return opened


def kinds(report: TransferReport) -> dict[int, OutcomeKind]:
    """Recipient index → outcome kind, checking every recipient appears once."""
    out: dict[int, OutcomeKind] = {}
    for result in report.results:
        for i in result.rcpts:
            assert i not in out, f"recipient {i} reported twice"
            out[i] = result.outcome.kind
    return out


def outcome_of(report: TransferReport, index: int):  # type: ignore[no-untyped-def]
    for result in report.results:
        if index in result.rcpts:
            return result.outcome
    raise AssertionError(f"recipient {index} not in the report")
