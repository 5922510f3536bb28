"""An intake worker process: SMTP sessions on inherited listening sockets, stores by IPC.

``sluice run`` (the queue manager) binds every ``smtp-listener``, then starts
``intake-processes`` copies of this module (``python -m sluice.daemon.worker_start``) with
the listening sockets and one end of a socket pair. A worker runs the whole injection side
(:class:`~sluice.intake.listener.IntakeServer`, source policy, header edits) and hands each
finished message to the manager through :class:`RemoteStore`; the manager stores it in the
spool, queues it, and answers once it is durable. Only then does the worker send the 250,
so the promise of the 250 holds across the process boundary.

A worker dies with its manager: the kernel kills it when the manager exits
(``PR_SET_PDEATHSIG``), and a lost link ends it at once, before any unanswered store could be
acknowledged. SIGTERM is a graceful stop (421 to open sessions, stores in flight finish);
SIGHUP is ignored (the manager forwards reloads as ``RELOAD`` frames).

Public names: RemoteStore, main (the process entry point), WORKER_MODULE.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import math
import os
import signal
import socket
import sys
from dataclasses import replace

import uvloop

from sluice.cli.check_config import read_config
from sluice.cli.run import setup_logging
from sluice.clock import Clock, ScaledClock
from sluice.config import Config, ConfigError
from sluice.daemon.gctune import tune_gc
from sluice.daemon.ipc import FrameProtocol, Kind, encode_store
from sluice.daemon.mapping import (
    ConfigSourceMap,
    configured_host_name,
    known_vmtas,
    listener_limits,
)
from sluice.daemon.system_clock import SystemClock
from sluice.errors import SpoolError, SpoolFullError, SpoolUnavailableError
from sluice.intake.inject import Injector
from sluice.intake.listener import Hooks, IntakeServer, ListenerLimits
from sluice.message import Envelope, MessageId
from sluice.sched.cpu import REFUSAL_REPLY

__all__ = ["WORKER_MODULE", "RemoteStore", "main"]

log = logging.getLogger("sluice.intake")

#: What the manager runs with ``python -m``.
WORKER_MODULE = "sluice.daemon.worker_start"
#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Exit status when the link to the manager is lost (EX_SOFTWARE, sysexits.h).
EXIT_LINK_LOST = 70
_STORE = Kind.STORE
_STORED = Kind.STORED


class RemoteStore:
    """The worker's spool: each store is a ``STORE`` frame answered by the manager."""

    __slots__ = ("_loop", "_next", "_waiting", "link")

    def __init__(self) -> None:
        self.link: FrameProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 1
        self._waiting: dict[int, asyncio.Future[MessageId]] = {}

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        msg_id: MessageId = await self.store_nowait(envelope, body)
        return msg_id

    def store_nowait(self, envelope: Envelope, body: bytes) -> asyncio.Future[MessageId]:
        """:meth:`store` without a coroutine (the injector's per-message path): the future
        resolves with the id once the manager answered STORED (or fails with its error).
        Raises SpoolUnavailableError at once when there is no link."""
        link = self.link
        if link is None or link.closed:
            raise SpoolUnavailableError("no link to the queue manager")
        req = self._next
        self._next = req + 1 if req < 0xFFFFFFFF else 1
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[MessageId] = loop.create_future()
        self._waiting[req] = future
        link.send(_STORE, req, encode_store(envelope, body))
        return future

    @property
    def pending(self) -> int:
        """Stores sent and not yet answered."""
        return len(self._waiting)

    def answer(self, kind: Kind, req: int, payload: bytes) -> None:
        """A STORED, FULL or FAILED frame from the manager."""
        future = self._waiting.pop(req, None)
        if future is None or future.done():
            return
        if kind is _STORED:
            future.set_result(int(payload))
        elif kind is Kind.FULL:
            future.set_exception(SpoolFullError(payload.decode("utf-8", "replace")))
        else:
            future.set_exception(SpoolError(payload.decode("utf-8", "replace")))


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the lost link still ends the worker
        pass
    if os.getppid() != parent:  # the manager died before prctl took effect
        os._exit(EXIT_LINK_LOST)


def _limits_for(config: Config, workers: int) -> ListenerLimits:
    limits = listener_limits(config)
    if workers > 1:  # total-max-smtp-in is shared out; per-client caps apply per worker
        share = max(1, math.ceil(limits.total_max_smtp_in / workers))
        limits = replace(limits, total_max_smtp_in=share)
    return limits


class _Worker:
    """One worker's running state: the intake server and the link to the manager."""

    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        self.args = args
        self.config = config
        clock: Clock = SystemClock()
        if args.time_scale != 1.0:
            origin = None
            if args.clock_origin:
                wall, mono = args.clock_origin.split(",")
                origin = (float(wall), float(mono))
            clock = ScaledClock(clock, args.time_scale, origin=origin)
        self.clock = clock
        self.store = RemoteStore()
        hostname = configured_host_name(config, args.hostname)
        self.injector = Injector(
            spool=self.store,
            clock=clock,
            hostname=hostname or socket.getfqdn() or "localhost",
            known_vmtas=known_vmtas(config),
            boot_token=f"{int(clock.wall())}w{args.index}",
        )
        limits = _limits_for(config, args.workers)
        self.intake = IntakeServer(
            injector=self.injector,
            policies=ConfigSourceMap(config),
            clock=clock,
            limits=limits,
            hooks=Hooks(),
        )
        self.stopping = asyncio.Event()

    def on_frame(self, kind: Kind, req: int, payload: bytes) -> None:
        if kind in (Kind.STORED, Kind.FULL, Kind.FAILED):
            self.store.answer(kind, req, payload)
        elif kind is Kind.BUSY:
            self.intake.busy = REFUSAL_REPLY if payload == b"1" else None
        elif kind is Kind.RELOAD:
            self._reload(req)
        else:
            log.warning("intake worker %d: unexpected frame %s", self.args.index, kind.name)

    def on_lost(self, exc: Exception | None) -> None:
        if self.stopping.is_set() and not self.store.pending:
            return
        # Unanswered stores must never be acknowledged: leave now, sessions close unanswered.
        # The manager's own death is the error worth logging (it logs its own); here it
        # is only the consequence.
        log.warning(
            "intake worker %d: queue manager gone (%s); exiting", self.args.index, exc or "EOF"
        )
        sys.stderr.flush()
        os._exit(EXIT_LINK_LOST)

    def _reload(self, req: int) -> None:
        link = self.store.link
        try:
            config = read_config(self.args.config)
        except (ConfigError, OSError) as exc:
            if link is not None:
                link.send(Kind.READY, req, f"reload refused: {exc}".encode())
            return
        self.config = config
        self.intake.update_policies(ConfigSourceMap(config))
        self.injector.set_known_vmtas(known_vmtas(config))
        if link is not None:
            link.send(Kind.READY, req, b"ok")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=self.args.ipc_fd)
        _, link = await loop.create_unix_connection(
            lambda: FrameProtocol(self.on_frame, self.on_lost), sock=sock
        )
        self.store.link = link
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        for fd in self.args.listen_fd:
            await self.intake.listen_socket(socket.socket(fileno=fd))
        link.send(Kind.READY, self.args.index, b"ready")
        tune_gc()
        await self.stopping.wait()
        await self.intake.shutdown()
        link.close()
        return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sluice-intake-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--ipc-fd", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, action="append", default=[])
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--hostname", default=None)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--clock-origin", default=None, help="WALL,MONOTONIC")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    _die_with_parent(args.parent)
    try:
        config = read_config(args.config)
    except (ConfigError, OSError) as exc:
        print(f"intake worker {args.index}: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    setup_logging(config, args.verbose)
    return int(uvloop.run(_Worker(args, config).run()))


if __name__ == "__main__":
    raise SystemExit(main())
