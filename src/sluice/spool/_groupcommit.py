"""Group commit: one worker thread runs queued operations in batches for an event loop.

Callers on the event loop ``submit`` an operation and await the returned future. The worker
thread wakes on the first pending operation, lingers up to ``linger`` seconds (or until
``max_batch`` operations are pending) so that concurrent callers join the batch, hands the
whole batch to ``run_batch`` (which commits once), and then resolves every future of the
batch with a single ``loop.call_soon_threadsafe`` call. No per-operation thread hop, task or
sync.

Operations that no client is waiting on at once (``urgent(op)`` false: in the spool, marks and
removes) may wait up to ``defer`` seconds for an urgent one (a store, which a client's reply
waits on) and ride in its commit: each commit costs an fsync whatever it carries, so this
saves the commits that would carry only a mark or a remove. An urgent operation never waits
for a deferred one, and every future still resolves only after the batch holding it has run.

With ``inline_max`` set, batches run on the event loop itself while they are quick: the
operations submitted within ``linger`` (a loop timer) form one batch, run by a loop callback
that resolves their futures directly. That saves each commit the thread hand-offs (the
thread's wake-up, the GIL going back and forth, ``call_soon_threadsafe`` waking the loop),
which on a fast disk cost more than the ``fdatasync`` itself: in the relay benchmark the
same build took in 10–15 % more messages a second at the same CPU per message
(docs/spool.md). When most recent batches take longer than ``inline_max`` (more than
``SLOW_SHARE`` of them, by an average in which each batch weighs ``SLOW_WEIGHT``: a slow
disk; a few alone are the process losing its CPU for a moment on a busy machine), the
batches of the next ``inline_pause`` seconds go to the thread, so a slow disk stalls the
loop a few times per pause at most. Batches never run on both at once:
the loop takes over again only when the thread has nothing pending or running.

Public names: GroupCommitter, BatchStats, INLINE_PAUSE, SLOW_SHARE, SLOW_WEIGHT.
Raises: SpoolUnavailableError from ``submit`` once the committer is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sluice.errors import SpoolUnavailableError

__all__ = ["INLINE_PAUSE", "SLOW_SHARE", "SLOW_WEIGHT", "BatchStats", "GroupCommitter"]

Op = TypeVar("Op")

#: ``run_batch`` returns one result per operation: a value, or the exception to raise.
BatchRunner = Callable[[Sequence[Op]], Sequence[object]]

#: Seconds that batches go to the thread once the loop's batches are mostly slow.
INLINE_PAUSE = 5.0
#: "Mostly slow": the weighted share of batches over ``inline_max`` exceeds SLOW_SHARE, each
#: batch weighing SLOW_WEIGHT (from none: 7 slow batches in a row; a steady third of them
#: never does).
SLOW_SHARE = 0.5
SLOW_WEIGHT = 0.1

log = logging.getLogger("sluice.spool")


@dataclass(slots=True)
class BatchStats:
    """Counters for benchmarks and tests: batches run and operations carried."""

    batches: int = 0
    ops: int = 0
    largest: int = 0
    #: Batches run on the event loop (the rest ran on the thread).
    inline: int = 0
    #: Times the batches moved from the loop to the thread (slow batches).
    to_thread: int = 0


class GroupCommitter(Generic[Op]):
    """A worker thread that runs operations submitted from one event loop in batches."""

    def __init__(
        self,
        name: str,
        run_batch: BatchRunner[Op],
        *,
        loop: asyncio.AbstractEventLoop,
        linger: float,
        max_batch: int,
        on_exit: Callable[[], None] | None = None,
        defer: float = 0.0,
        urgent: Callable[[Op], bool] | None = None,
        inline_max: float | None = None,
        inline_pause: float = INLINE_PAUSE,
    ) -> None:
        self._run_batch = run_batch
        self._loop = loop
        self._linger = linger
        self._max_batch = max_batch
        self._on_exit = on_exit
        #: None: every operation is urgent (nothing is deferred).
        self._urgent = urgent if defer > 0 else None
        self._defer = defer
        # Two plain locks rather than a threading.Condition, whose methods are Python code
        # (``submit`` runs once per operation): ``_lock`` guards the state below; the thread
        # sleeps by acquiring ``_wake`` (held while nobody has signalled) and ``_signal``
        # releases it, at most once per sleep (``_sleeping``).
        self._lock = threading.Lock()
        self._wake = threading.Lock()
        self._wake.acquire()
        self._sleeping = False
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        #: Urgent operations among ``_pending``.
        self._n_urgent = 0
        #: The deferred operations' wait is over (set on the loop by ``_timer``).
        self._due = False
        #: Armed (on the loop thread only) while deferred operations wait for their deadline.
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False
        self._waiting_for_full = False
        self._stopping = False
        self._abandon = False
        self._stopped: asyncio.Future[None] = loop.create_future()
        self.stats = BatchStats()
        # Batches on the loop (these attributes are used on the loop thread only).
        self._inline_max = inline_max
        self._inline_pause = inline_pause
        self._name = name
        #: The weighted share of slow batches on the loop.
        self._slow_share = 0.0
        #: Batches run on the loop now (else on the thread, at least until ``_loop_again``).
        self._on_loop = inline_max is not None
        self._loop_again = 0.0
        #: The operations waiting for the loop's next batch, the callback that will run
        #: them, and whether an urgent operation set that callback's time.
        self._loop_ops: list[tuple[Op, asyncio.Future[Any]]] = []
        self._loop_run: asyncio.Handle | None = None
        self._loop_run_urgent = False
        #: The thread is running a batch (guarded by ``_lock``).
        self._running = False
        self._committer_thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._committer_thread.start()

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op`` for the next batch; the future gets its result (call on the loop)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        is_urgent = self._urgent
        urgent = is_urgent is None or is_urgent(op)
        if self._inline_max is not None and (self._on_loop or self._back_on_loop()):
            if self._stopping:
                raise SpoolUnavailableError("the spool is closed")
            ops = self._loop_ops
            ops.append((op, fut))
            if len(ops) == self._max_batch:  # full: at once (later ones join it)
                self._schedule_on_loop(0.0, urgent=True)
            elif urgent:
                if not self._loop_run_urgent:
                    self._schedule_on_loop(self._linger, urgent=True)
            elif self._loop_run is None:
                self._schedule_on_loop(self._defer, urgent=False)
            return fut
        with self._lock:
            if self._stopping:
                raise SpoolUnavailableError("the spool is closed")
            pending = self._pending
            pending.append((op, fut))
            full = len(pending) >= self._max_batch
            if urgent:
                self._n_urgent += 1
            if (self._waiting and (urgent or full)) or (self._waiting_for_full and full):
                self._signal()
        if not urgent and self._timer is None:
            self._timer = self._loop.call_later(self._defer, self._deadline)
        return fut

    async def stop(self, *, abandon: bool = False) -> None:
        """Run what is pending (or drop it if ``abandon``), then end the thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop_run is not None:
            self._loop_run.cancel()
            self._loop_run = None
        ops, self._loop_ops = self._loop_ops, []
        if abandon:
            _close(ops, SpoolUnavailableError("the spool is closed"), None)
        elif ops:
            self._run_here(ops)
        with self._lock:
            self._stopping = True
            self._abandon = abandon
            self._signal()
        await self._stopped
        self._committer_thread.join()

    def _deadline(self) -> None:
        """The oldest deferred operation has waited ``defer``: run what is pending (loop)."""
        self._timer = None
        with self._lock:
            if self._pending and not self._stopping:
                self._due = True
                if self._waiting:
                    self._signal()

    # -- batches on the loop ----------------------------------------------------------------

    def _back_on_loop(self) -> bool:
        """Move the batches back to the loop if they may run there again — the pause after
        the slow ones is over and the thread has nothing pending or running (so the two
        never overlap); whether they are on the loop now."""
        if self._loop.time() < self._loop_again:
            return False
        with self._lock:
            if self._pending or self._running or self._stopping:
                return False
        self._on_loop = True
        return True

    def _schedule_on_loop(self, delay: float, *, urgent: bool) -> None:
        """Run the loop's pending operations after ``delay`` (sooner replaces later)."""
        handle = self._loop_run
        if handle is not None:
            handle.cancel()
        self._loop_run_urgent = urgent
        if delay > 0:
            self._loop_run = self._loop.call_later(delay, self._run_on_loop)
        else:
            self._loop_run = self._loop.call_soon(self._run_on_loop)

    def _run_on_loop(self) -> None:
        self._loop_run = None
        self._loop_run_urgent = False
        ops, self._loop_ops = self._loop_ops, []
        started = time.monotonic()
        self._run_here(ops)
        inline_max = self._inline_max
        if inline_max is None:
            return
        slow = time.monotonic() - started > inline_max
        share = (1.0 - SLOW_WEIGHT) * self._slow_share + (SLOW_WEIGHT if slow else 0.0)
        self._slow_share = share
        if share > SLOW_SHARE:
            # The disk, not a moment without the CPU: the thread runs the batches a while.
            self._slow_share = 0.0
            self._on_loop = False
            self._loop_again = self._loop.time() + self._inline_pause
            self.stats.to_thread += 1
            log.debug(
                "%s: most batches took over %.1f ms on the event loop; the thread runs "
                "them for %.0f s",
                self._name,
                inline_max * 1000,
                self._inline_pause,
            )

    def _run_here(self, ops: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        """Run ``ops`` on the loop, ``max_batch`` at a time, and resolve their futures."""
        step = self._max_batch
        for i in range(0, len(ops), step):
            live = [(op, fut) for op, fut in ops[i : i + step] if not fut.done()]
            if not live:
                continue
            try:
                results = self._run_batch([op for op, _ in live])
            except BaseException as exc:
                results = [exc] * len(live)
            self._count(len(live), inline=True)
            _resolve(live, results)

    def _count(self, n: int, *, inline: bool) -> None:
        stats = self.stats
        stats.batches += 1
        stats.ops += n
        stats.largest = max(stats.largest, n)
        if inline:
            stats.inline += 1

    def _signal(self) -> None:
        """Wake the thread if it sleeps (call with ``_lock`` held)."""
        if self._sleeping:
            self._sleeping = False
            self._wake.release()

    # -- worker thread -------------------------------------------------------------------

    def _sleep(self, timeout: float | None) -> None:
        """Sleep until signalled, or ``timeout`` seconds (called with ``_lock`` held, which
        is released meanwhile and held again on return)."""
        self._sleeping = True
        self._lock.release()
        try:
            woken = self._wake.acquire() if timeout is None else self._wake.acquire(True, timeout)
        finally:
            self._lock.acquire()
        if not woken:
            if self._sleeping:  # nobody signalled
                self._sleeping = False
            else:  # a signal came between the timeout and taking _lock: consume it
                self._wake.acquire()

    def _take(self) -> list[tuple[Op, asyncio.Future[Any]]] | None:
        with self._lock:
            while not (
                self._stopping
                or self._n_urgent
                or (self._pending and (self._due or len(self._pending) >= self._max_batch))
            ):
                self._waiting = True
                self._sleep(None)
                self._waiting = False
            if self._stopping and (self._abandon or not self._pending):
                return None
            if self._linger > 0 and len(self._pending) < self._max_batch and not self._stopping:
                self._waiting_for_full = True
                self._sleep(self._linger)
                self._waiting_for_full = False
            pending = self._pending
            self._running = True
            if len(pending) <= self._max_batch:
                self._pending = []
                self._n_urgent = 0
                self._due = False
                return pending
            # More than a batch: take the oldest; the rest stays as urgent or due as it was.
            batch = pending[: self._max_batch]
            del pending[: self._max_batch]
            is_urgent = self._urgent
            if is_urgent is None:
                self._n_urgent = len(pending)
            else:
                self._n_urgent = sum(1 for op, _ in pending if is_urgent(op))
            return batch

    def _main(self) -> None:
        try:
            while (batch := self._take()) is not None:
                # A caller cancelled before its batch began: drop its operation.
                live = [(op, fut) for op, fut in batch if not fut.done()]
                if live:
                    try:
                        results = self._run_batch([op for op, _ in live])
                    except BaseException as exc:
                        results = [exc] * len(live)
                    self._count(len(live), inline=False)
                    self._call(_resolve, live, results)
                with self._lock:
                    self._running = False
        finally:
            if self._on_exit is not None:
                try:
                    self._on_exit()
                finally:
                    self._finish()
            else:
                self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._stopping = True
            leftover = self._pending
            self._pending = []
        err = SpoolUnavailableError("the spool is closed")
        self._call(_close, leftover, err, self._stopped)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop was closed without closing the spool: nobody waits
            pass


def _resolve(batch: list[tuple[Any, asyncio.Future[Any]]], results: Sequence[object]) -> None:
    for (_, fut), res in zip(batch, results, strict=True):
        if fut.done():
            continue
        if isinstance(res, BaseException):
            fut.set_exception(res)
        else:
            fut.set_result(res)


def _close(
    leftover: list[tuple[Any, asyncio.Future[Any]]],
    err: BaseException,
    stopped: asyncio.Future[None] | None,
) -> None:
    for _, fut in leftover:
        if not fut.done():
            fut.set_exception(err)
    if stopped is not None and not stopped.done():
        stopped.set_result(None)
