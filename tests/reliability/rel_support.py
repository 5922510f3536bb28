"""Shared pieces for the daemon-level reliability tests (test plan T01–T06, T09, T20, T21).

Each test runs the real ``python -m sluice run`` process (through tests/e2e's SluiceProcess)
and inspects the spool afterwards with :class:`sluice.spool.SqliteSpool`, the same way the
daemon recovers it.

Public names:
    start_daemon(tmp, *, spool=None, sources=None, extra=(), prefix=(), deliver=False,
                 start_timeout=30) -> Daemon          config written, process started (220 seen)
    Daemon                     SluiceProcess plus the config path, spool dir and listener
    SpoolContents, read_spool(spool_dir) -> SpoolContents   every recovered message with its
                               body, and the quarantine row count
    spool_deliveries(contents) -> list[Delivery]    one Delivery per stored recipient (ledger)
    proc_status(pid) -> dict[str, int]     VmRSS/VmHWM/... in kB, PID and its children summed
    fd_count(pid) -> int                   open descriptors of PID and its children
    tree_pids(pid) -> list[int]            PID and its descendants
    log_problems(text) -> list[str]        log lines that show corruption, quarantine or a crash
    reply_of(sock_file) -> tuple[int, str] one (possibly multi-line) SMTP reply from a file
    is_spool_file(name)                    a file a spool directory may hold (either format)
Nothing here raises except PeerError from start-up and OSError from /proc reads.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.e2e.ledger import Delivery, parse_delivery
from tests.e2e.peers import free_port
from tests.e2e.sluice_config import Directives, write_sluice_config
from tests.e2e.sluice_proc import SluiceProcess

from sluice.message import Envelope
from sluice.spool import open_spool, spool_kind_at

__all__ = [
    "Daemon",
    "SpoolContents",
    "fd_count",
    "is_spool_file",
    "log_problems",
    "proc_status",
    "read_spool",
    "reply_of",
    "spool_deliveries",
    "start_daemon",
]

#: Everything SqliteSpool keeps in ``<spool PATH>`` (docs/spool.md, "Layout").
SQLITE_FILES = frozenset({"spool.db", "spool.db-wal", "spool.db-shm", "spool.lock"})
#: SegmentSpool's: segments, their sidecar indexes, the next preallocated one, the lock.
_SEGMENT_FILE = re.compile(r"seg-[0-9]{8}\.(log|idx)|next\.tmp|spool\.lock")


def is_spool_file(name: str) -> bool:
    """True for a file one of the spool formats keeps (no stray or quarantine files)."""
    return name in SQLITE_FILES or _SEGMENT_FILE.fullmatch(name) is not None


#: Only 127.0.0.1 may relay; everybody else (127.0.0.66 …) is an outsider. Without the 0/0
#: block the built-in default would let all of 127/8 relay (docs/intake.md).
TRUSTED_ONLY: Mapping[str, Directives] = {
    "127.0.0.1": {"always-allow-relaying": "yes"},
    "0/0": {"always-allow-relaying": "no"},
}
_PROBLEM = re.compile(r"Traceback|quarantin|corrupt|malformed|CRITICAL| ERROR ", re.IGNORECASE)


@dataclass(slots=True)
class Daemon:
    """One configured daemon: the process, its config, spool and listener."""

    proc: SluiceProcess
    config: Path
    spool: Path
    host: str
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.proc.stderr_text()


def start_daemon(
    tmp: Path,
    *,
    spool: Path | None = None,
    sources: Mapping[str, Directives] | None = None,
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
    deliver: bool = False,
    start_timeout: float = 30.0,
    start: bool = True,
) -> Daemon:
    """Write a config (listener on a free 127.0.0.1 port) and start ``sluice run`` on it.

    ``prefix`` goes in front of the interpreter (``strace …``, ``eatmydata``).
    """
    port = free_port("127.0.0.1")
    spool_dir = (spool if spool is not None else tmp / "spool").resolve()
    config = write_sluice_config(
        tmp,
        listener=("127.0.0.1", port),
        dns_server=("127.0.0.1", free_port("127.0.0.1")),
        smtp_port=free_port("127.0.0.1"),
        spool=spool_dir,
        sources=sources or TRUSTED_ONLY,
        extra=list(extra),
    )
    argv = [*prefix, sys.executable, "-m", "sluice", "run", "-c", str(config)]
    argv += ["--spool", str(spool_dir), "--hostname", "mut.test"]
    if not deliver:
        argv.append("--no-deliver")
    proc = SluiceProcess(
        config,
        listener=("127.0.0.1", port),
        workdir=tmp / "run",
        argv=argv,
        start_timeout=start_timeout,
    )
    if start:
        proc.start()
    return Daemon(proc=proc, config=config, spool=spool_dir, host="127.0.0.1", port=port)


@dataclass(slots=True)
class SpoolContents:
    """What recovery finds in a spool, with every body loaded."""

    messages: list[tuple[int, Envelope, bytes]] = field(default_factory=list)
    quarantined: int = 0

    @property
    def ids(self) -> list[int]:
        return [m[0] for m in self.messages]


async def _read(path: Path) -> SpoolContents:
    kind = spool_kind_at(str(path))
    assert kind is not None, f"no spool in {path}"
    spool = await open_spool(str(path), kind=kind)
    out = SpoolContents()
    try:
        for m in spool.recover():
            out.messages.append((int(m.msg_id), m.envelope, await spool.load_body(m.msg_id)))
    finally:
        await spool.close()
    if kind == "sqlite":
        with sqlite3.connect(path / "spool.db") as conn:
            out.quarantined = int(conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])
        conn.close()
    else:
        out.quarantined = len(list((path / "quarantine").glob("*.bad")))
    return out


def read_spool(spool_dir: Path) -> SpoolContents:
    """Open the (stopped) daemon's spool, recover it and load every body."""
    return asyncio.run(_read(spool_dir))


def spool_deliveries(contents: SpoolContents) -> list[Delivery]:
    """The spool as the ledger's "receiver": one Delivery per stored recipient."""
    out: list[Delivery] = []
    for mid, env, body in contents.messages:
        rcpts = [r.address for r in env.recipients]
        out.extend(parse_delivery(body, rcpts, f"spool:{mid}"))
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (the queue manager and its intake workers)."""
    out = [pid]
    for current in out:
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        out.extend(int(c) for c in children)
    return out


def proc_status(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of /proc/PID/status, in kB, summed over PID and its children."""
    out: dict[str, int] = {}
    for member in tree_pids(pid):
        try:
            text = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.startswith("Vm") and value.strip().endswith("kB"):
                out[key] = out.get(key, 0) + int(value.split()[0])
    return out


def fd_count(pid: int) -> int:
    """Open descriptors of PID and its children."""
    total = 0
    for member in tree_pids(pid):
        try:
            total += sum(1 for _ in Path(f"/proc/{member}/fd").iterdir())
        except OSError:
            continue
    return total


def log_problems(text: str) -> list[str]:
    """Lines of a daemon log that report a crash, corruption or quarantine."""
    return [line for line in text.splitlines() if _PROBLEM.search(line)]


def reply_of(f: BinaryIO) -> tuple[int, str]:
    """Read one SMTP reply; (0, "") when the connection closed first."""
    text: list[str] = []
    while True:
        line = f.readline(4096)
        if not line:
            return 0, "\n".join(text)
        s = line.rstrip(b"\r\n").decode("utf-8", "replace")
        text.append(s)
        if len(s) < 4 or s[3] != "-":
            return int(s[:3]) if s[:3].isdigit() else 0, "\n".join(text)
