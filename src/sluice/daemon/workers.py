"""The queue manager's side of intake in separate processes (``intake-processes``).

With ``intake-processes N`` (N ≥ 1; ``sluice run`` picks 1 on a machine with two or more
CPUs) the manager binds every ``smtp-listener`` itself, then starts N intake workers
(:mod:`sluice.daemon.worker_main`) that share those sockets. SMTP sessions run in the
workers; the spool, the scheduler, delivery and accounting stay in the manager, which is
the spool's only writer. Each worker sends a finished message as a ``STORE`` frame; the
manager stores it (group commit), hands it to the scheduler and writes its ``r`` records,
then answers ``STORED`` with the queue id — the worker's 250 follows that answer.

A worker that dies is started again after a pause; stores it had in flight are either
durable (queued, never acknowledged: the client sends them again) or never happened.

Public names: IntakeWorkers, bind_listener.
Raises: OSError from :func:`bind_listener`, and from :meth:`IntakeWorkers.start` when a
worker does not come up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sluice.daemon.bodycache import BodyCache
from sluice.daemon.ipc import FrameProtocol, Kind, decode_store
from sluice.errors import SpoolError, SpoolFullError
from sluice.message import Envelope, MessageId
from sluice.spool import AnySpool

__all__ = ["IntakeWorkers", "WorkerOptions", "bind_listener"]

log = logging.getLogger("sluice.daemon")

#: How long start-up waits for a worker's READY (imports and config parsing take ~0.5 s).
START_TIMEOUT = 30.0
#: Pause before starting a worker again after it died (no restart storm).
RESTART_PAUSE = 1.0
#: The pause doubles for a worker that keeps dying (e.g. a configuration file edited into
#: an unreadable state), up to this; it starts again from RESTART_PAUSE after a worker has
#: run for STABLE_AFTER seconds.
RESTART_PAUSE_MAX = 60.0
STABLE_AFTER = 30.0
#: Extra seconds, beyond the listener's shutdown grace, before a stopping worker is killed.
STOP_MARGIN = 5.0

OnReceived = Callable[[MessageId, Envelope, int], None]


def bind_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A listening, non-blocking TCP socket for one ``smtp-listener``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # as asyncio does: [::] and 0.0.0.0 may both listen
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """What every worker is started with."""

    count: int
    config_path: str
    hostname: str | None = None
    time_scale: float = 1.0
    #: The manager's scaled-clock origin (wall, monotonic), so workers stamp arrival times
    #: on the manager's scaled time (``--time-scale``).
    clock_origin: tuple[float, float] | None = None
    verbose: bool = False
    #: Seconds a stopping worker may take (the listeners' shutdown grace plus a margin).
    stop_timeout: float = 35.0


class _Link:
    """One worker: its process and the framed link to it."""

    __slots__ = ("index", "link", "pause", "proc", "ready")

    def __init__(self, index: int) -> None:
        self.index = index
        #: The pause before the next restart (grows while the worker keeps dying).
        self.pause = RESTART_PAUSE
        self.proc: asyncio.subprocess.Process | None = None
        self.link: FrameProtocol | None = None
        self.ready: asyncio.Future[None] | None = None


class IntakeWorkers:
    """Starts, feeds, reloads and stops the intake worker processes."""

    def __init__(
        self,
        options: WorkerOptions,
        sockets: list[socket.socket],
        spool: AnySpool,
        on_received: OnReceived,
        bodies: BodyCache | None = None,
    ) -> None:
        self.options = options
        self.sockets = sockets
        self.spool = spool
        self.on_received = on_received
        self.bodies = bodies
        self.busy = False
        self.stopping = False
        self._workers = [_Link(i) for i in range(options.count)]
        self._watchers: set[asyncio.Task[None]] = set()

    # --- start ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until each listens (OSError if one cannot)."""
        for worker in self._workers:
            await self._spawn(worker)
        for worker in self._workers:
            assert worker.ready is not None
            try:
                await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT)
            except TimeoutError as exc:
                raise OSError(f"intake worker {worker.index} did not start") from exc

    def _is_stopping(self) -> bool:
        """``stopping``, read through a call (not narrowed by an earlier test: mypyc)."""
        return self.stopping

    async def _spawn(self, worker: _Link) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        opts = self.options
        argv = [
            sys.executable,
            "-m",
            "sluice.daemon.worker_start",  # worker_main itself may be compiled
            "--config",
            opts.config_path,
            "--ipc-fd",
            str(theirs.fileno()),
            "--index",
            str(worker.index),
            "--workers",
            str(opts.count),
            "--parent",
            str(os.getpid()),
            "--time-scale",
            repr(opts.time_scale),
        ]
        for sock in self.sockets:
            argv += ["--listen-fd", str(sock.fileno())]
        if opts.hostname:
            argv += ["--hostname", opts.hostname]
        if opts.clock_origin is not None:
            argv += ["--clock-origin", "{!r},{!r}".format(*opts.clock_origin)]
        if opts.verbose:
            argv.append("-v")
        ready: asyncio.Future[None] = loop.create_future()
        ready.add_done_callback(_consume)  # nobody awaits a restarted worker's READY
        worker.ready = ready
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=[theirs.fileno(), *(s.fileno() for s in self.sockets)],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if self.stopping:  # shutdown began while this worker was starting
            worker.proc.send_signal(signal.SIGTERM)
        _, worker.link = await loop.create_unix_connection(
            lambda: FrameProtocol(
                lambda kind, req, payload: self._on_frame(worker, kind, req, payload),
                lambda exc: None,
            ),
            sock=ours,
        )
        task = loop.create_task(self._watch(worker), name=f"intake-worker-{worker.index}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        if self.busy:
            worker.link.send(Kind.BUSY, 0, b"1")

    async def _watch(self, worker: _Link) -> None:
        proc = worker.proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: object = await proc.wait()
        if worker.link is not None:
            worker.link.close()
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(OSError(f"intake worker exited with status {status}"))
        if self.stopping:
            return
        pause = RESTART_PAUSE if loop.time() - started >= STABLE_AFTER else worker.pause
        while not self.stopping:
            log.error(
                "intake worker %d exited with status %s; starting it again in %.0fs",
                worker.index,
                status,
                pause,
            )
            await asyncio.sleep(pause)
            worker.pause = pause = min(pause * 2, RESTART_PAUSE_MAX)
            if self._is_stopping():  # stop() may have run during the pause
                return
            try:
                await self._spawn(worker)
                return
            except OSError as exc:  # fork or socketpair failed (e.g. out of memory): again
                status = f"not started: {exc}"

    # --- frames from workers --------------------------------------------------------

    def _on_frame(self, worker: _Link, kind: Kind, req: int, payload: bytes) -> None:
        if kind is Kind.STORE:
            self._store(worker, req, payload)
        elif kind is Kind.READY:
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_result(None)
            elif payload == b"ok":
                log.info("intake worker %d: configuration reloaded", worker.index)
            else:
                log.error("intake worker %d: %s", worker.index, payload.decode("utf-8", "replace"))
        else:
            log.warning("intake worker %d sent an unexpected %s frame", worker.index, kind.name)

    def _store(self, worker: _Link, req: int, payload: bytes) -> None:
        link = worker.link
        assert link is not None
        try:
            envelope, data = decode_store(payload)
            future = self.spool.store_nowait(envelope, data)
        except SpoolFullError as exc:
            link.send(Kind.FULL, req, str(exc).encode())
            return
        except Exception as exc:  # any failure is a 451, never a 250
            link.send(Kind.FAILED, req, str(exc).encode())
            return
        size = len(data)

        def done(fut: asyncio.Future[MessageId]) -> None:
            exc = fut.exception()
            if exc is not None:
                kind = Kind.FULL if isinstance(exc, SpoolFullError) else Kind.FAILED
                if not isinstance(exc, SpoolError):
                    log.error("spool store raised unexpectedly: %r", exc)
                link.send(kind, req, str(exc).encode())
                return
            msg_id = fut.result()
            if self.bodies is not None:
                self.bodies.put(msg_id, data)
            try:
                self.on_received(msg_id, envelope, size)
            except Exception:
                log.exception("hand-off failed for message %s", msg_id)
            link.send(Kind.STORED, req, str(msg_id).encode())

        future.add_done_callback(done)

    # --- commands to workers --------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        """``max-cpu-usage``: new injections get 421/451 4.3.2 while ``busy``."""
        self.busy = busy
        for worker in self._workers:
            if worker.link is not None:
                worker.link.send(Kind.BUSY, 0, b"1" if busy else b"0")

    def reload(self) -> None:
        """Ask every worker to read the configuration file again."""
        for worker in self._workers:
            if worker.link is not None:
                worker.link.send(Kind.RELOAD, worker.index)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    # --- stop -----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """SIGTERM every worker (421 to its sessions, stores in flight finish — this
        process keeps answering them), wait for it to exit, kill it past the timeout."""
        self.stopping = True
        # Our copies of the listening sockets go first: once the workers close theirs, new
        # connections are refused at once instead of waiting unanswered in the backlog.
        for sock in self.sockets:
            sock.close()
        procs = [w.proc for w in self._workers if w.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(proc.wait()) for proc in procs]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.options.stop_timeout)
            for proc in procs:
                if proc.returncode is None:
                    log.warning("intake worker %d did not stop; killing it", proc.pid)
                    proc.kill()
            if late:
                await asyncio.wait(late)
        for task in list(self._watchers):
            task.cancel()


def _consume(future: asyncio.Future[None]) -> None:
    """Mark a READY future's exception as seen (a restarted worker's is only logged)."""
    if not future.cancelled():
        future.exception()
