"""The qmgr loop: ask the scheduler what to do, do it, feed the results back.

:class:`DeliveryManager` is the only place where the pure scheduler meets the network. It
calls ``Scheduler.plan(now)``, carries out each action — open a session (``Connect``), run
transactions on it (``Deliver``), close it (``Close``), record a recipient's fate
(``Delivered``, ``Defer``, ``Bounce``, ``Removed``) in the spool and the accounting file — and
sleeps until the next ``Wake`` or until new mail arrives. Spool updates are batched: one
``Spool.mark`` per loop turn, and a message is removed only after the marks that made all of
its recipients final are durable (test-plan D4).

Public names: DeliveryManager.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from sluice.acct.records import RecordType
from sluice.config import DEFAULT_VMTA, parse_queue_name
from sluice.daemon.mapping import delivery_settings, dns_servers, local_names, route_settings
from sluice.daemon.notices import Notices
from sluice.daemon.outcomes import PendingOutcomes
from sluice.daemon.wakeup import Wakeup
from sluice.delivery import ConnectFailure, Session, Transfer, open_session
from sluice.delivery.values import SessionInfo
from sluice.message import RcptState
from sluice.net.dns import CachingResolver, DnsResolver
from sluice.routing import SourceChooser, SourceHost
from sluice.sched import (
    Action,
    Bounce,
    BounceReason,
    Close,
    Connect,
    Defer,
    Deliver,
    Delivered,
    ModeChanged,
    Outcome,
    OutcomeKind,
    Removed,
    Reroute,
    Result,
    Scope,
    SourceDisabled,
    Wake,
)
from sluice.spool.base import Spool

if TYPE_CHECKING:
    from sluice.daemon.lifecycle import Daemon

__all__ = ["DeliveryManager"]

log = logging.getLogger("sluice.delivery")

#: Longest sleep between plans when the scheduler asks for no earlier wake (seconds).
MAX_IDLE_SLEEP = 1.0

#: How long stopping waits for a flush in progress before cancelling it (seconds).
FLUSH_STOP_TIMEOUT = 10.0


class DeliveryManager:
    """Carries out the scheduler's decisions for one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.sched = daemon.scheduler
        self.rng = random.Random()
        self.sessions: dict[int, Session] = {}
        self.conn_queue: dict[int, str] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        #: Open connections whose task waits for their next Deliver (see ``_serve``).
        self._idle: dict[int, asyncio.Future[Deliver | None]] = {}
        self.wake_at: float | None = None
        self.possible_duplicates = 0
        #: Accounting records and DSNs of this turn (written by ``_flush``).
        self.notices = Notices(daemon)
        #: Marks and finished messages waiting for the flush.
        self.outcomes = PendingOutcomes(daemon, self.notices)
        self._log_failures: dict[str, bool] = {}
        #: Connections whose current Deliver was already reported to the scheduler.
        self._reported_ids: set[int] = set()
        self._sources: dict[str, SourceChooser | None] = {}
        #: Our own host names: an MX pointing at one of them is a mail loop (5.4.6).
        self._local_names = local_names(daemon.config)
        self._loop_task: asyncio.Task[None] | None = None
        #: The flusher: writes each turn's outcomes while the planner goes on dispatching.
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_wanted = Wakeup()
        self._stopping = False
        nameservers, port = dns_servers(daemon.config)
        self.resolver = CachingResolver(
            DnsResolver(nameservers=nameservers, port=port), clock=daemon.clock
        )

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._run(), name="delivery-manager")
        self._flush_task = loop.create_task(self._flusher(), name="delivery-flusher")
        if self.d.pending_actions:
            pending, self.d.pending_actions = self.d.pending_actions, []
            self.execute(pending)

    def reconfigured(self) -> None:
        """After a reload: forget per-queue memos so the new settings apply."""
        self._local_names = local_names(self.d.config)
        self._sources.clear()
        self._log_failures.clear()
        self.d.wake()

    async def stop(self) -> None:
        self._stopping = True
        self.d.wake()
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        if self._flush_task is not None:
            # Let a flush in progress finish (cancelling it would drop its snapshot).
            self._flush_wanted.set()
            await asyncio.wait({self._flush_task}, timeout=FLUSH_STOP_TIMEOUT)
            self._flush_task.cancel()
            try:
                await self._flush_task
            except asyncio.CancelledError:
                pass
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for session in list(self.sessions.values()):
            try:
                await asyncio.wait_for(session.close(), 2.0)
            except (TimeoutError, OSError):
                pass
        self.sessions.clear()
        await self._flush()

    async def _run(self) -> None:
        clock = self.d.clock
        wakeup = self.d.wakeup
        loop = asyncio.get_running_loop()
        while not self._stopping:
            wakeup.clear()
            now = clock.wall()
            self._forget_wake()
            try:
                self.execute(self.sched.plan(now))
                if self.outcomes.pending():
                    self._flush_wanted.set()
            except Exception:  # a bug must not stop delivery for good: log, pause, go on
                log.exception("delivery manager: turn failed; retrying in %.0fs", MAX_IDLE_SLEEP)
                await asyncio.sleep(MAX_IDLE_SLEEP)
                continue
            delay = MAX_IDLE_SLEEP
            if self.wake_at is not None:
                delay = max(0.0, min(delay, (self.wake_at - clock.wall()) / self.d.time_scale))
            if delay > 0 and not wakeup.is_set():
                # A timer that sets the event, not wait_for (which makes a task every turn).
                timer = loop.call_later(delay, wakeup.set)
                try:
                    await wakeup.wait()
                finally:
                    timer.cancel()

    def _spool(self) -> Spool | None:
        """The daemon's spool, as the ``Spool`` protocol: any spool, or a test's stand-in
        (a typed attribute read would be checked against the concrete spool classes when
        this module is compiled)."""
        spool: Spool | None = getattr(self.d, "spool")  # noqa: B009 (untyped read, see above)
        return spool

    def _forget_wake(self) -> None:
        """Clear ``wake_at`` before a turn (the turn's actions set it again). A method, not an
        assignment in the loop: the type checker, and mypyc which compiles by its types, would
        otherwise take ``wake_at`` for None for the rest of the turn."""
        self.wake_at = None

    async def _flusher(self) -> None:
        """Flush the outcomes of each turn in the background.

        A flush waits for spool commits (an fsync each); the planner must not wait with it,
        or every idle connection would sit out the fsync before its next message. The turn
        loop asks for a flush whenever outcomes are pending (at least once a second while a
        failed flush is being retried); one runs at a time, and one more follows if outcomes
        arrived meanwhile.
        """
        wanted = self._flush_wanted
        while not self._stopping:
            await wanted.wait()
            wanted.clear()
            try:
                await self._flush()
            except Exception:  # a bug must not stop flushing for good: log, pause, go on
                log.exception("delivery manager: flush failed; retrying in %.0fs", MAX_IDLE_SLEEP)
                await asyncio.sleep(MAX_IDLE_SLEEP)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task %s failed", task.get_name(), exc_info=task.exception())
        self.d.wake()

    # ---- actions ---------------------------------------------------------------------

    def execute(self, actions: Sequence[Action], info: SessionInfo | None = None) -> None:
        now = self.d.clock.wall()
        for action in actions:
            match action:
                case Connect():
                    self._spawn(self._connect(action), f"connect {action.queue}")
                case Deliver():
                    waiter = self._idle.pop(action.connection_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(action)  # the connection's own task carries it out
                    else:
                        self._spawn(self._deliver(action), f"deliver {action.queue}")
                case Close():
                    self._spawn(self._close(action), f"close {action.queue}")
                case Delivered():
                    self._observe(action.queue, OutcomeKind.DELIVERED, now, len(action.rcpts))
                    self.notices.success_dsn(action, info)
                    self.outcomes.final(
                        action.msg_id, action.rcpts, RcptState.DELIVERED, action.text
                    )
                    self.notices.record(RecordType.DELIVERY, action, info)
                case Defer():
                    self._observe(action.queue, OutcomeKind.TRANSIENT, now, len(action.rcpts))
                    if self._logs_failures(action.queue):
                        log.info(
                            "queue %s: message %d: %d recipient(s) deferred (attempt %d, "
                            "next in %.0fs): %s",
                            action.queue,
                            action.msg_id,
                            len(action.rcpts),
                            action.attempts,
                            max(0.0, action.next_attempt - now),
                            action.text,
                        )
                    self.outcomes.mark(
                        action.msg_id,
                        action.rcpts,
                        RcptState.QUEUED,
                        action.text,
                        attempts=action.attempts,
                        next_attempt=action.next_attempt,
                    )
                    self.notices.record(RecordType.TRANSIENT, action, info)
                case Bounce():
                    if action.reason is not BounceReason.EXPIRED:
                        self._observe(action.queue, OutcomeKind.PERMANENT, now, len(action.rcpts))
                    self.notices.bounce(action, info)
                    self.outcomes.final(action.msg_id, action.rcpts, RcptState.BOUNCED, action.text)
                case Removed():
                    self.outcomes.final(action.msg_id, action.rcpts, RcptState.DELETED, "deleted")
                case Wake():
                    if self.wake_at is None or action.at < self.wake_at:
                        self.wake_at = action.at
                case ModeChanged():
                    log.warning(
                        "queue %s: mode %s%s: %s",
                        action.queue,
                        action.mode.value,
                        "" if action.until is None else f" for {action.until - now:.0f}s",
                        action.text,
                    )
                case SourceDisabled():
                    log.warning(
                        "queue %s: source %s disabled: %s", action.queue, action.source, action.text
                    )
                case Reroute():
                    self._reroute(action)

    def _logs_failures(self, queue: str) -> bool:
        """``log-delivery-failures`` (the seed's dialect) for this queue, memoised."""
        found = self._log_failures.get(queue)
        if found is None:
            setting = self.d.config.policy_for(queue).settings.get("log-delivery-failures")
            found = bool(setting is not None and setting.value)
            self._log_failures[queue] = found
        return found

    def _observe(self, queue: str, kind: OutcomeKind, now: float, n: int) -> None:
        """Feed a warm-up plan the outcomes of its VMTA (deferral and bounce rates)."""
        warmup = self.d.warmup
        if not warmup.any:  # no plan at all: nothing to parse (this runs per outcome)
            return
        domain, vmta = parse_queue_name(queue)
        if warmup.plan_of(vmta) is not None:
            warmup.observe(vmta, domain, kind, now, n)

    def _reroute(self, action: Reroute) -> None:
        """``backoff-reroute-to-virtual-mta``: move recipients to the same domain on another
        VMTA (or a member of a pool), keeping their arrival time and retry state."""
        domain, _ = parse_queue_name(action.queue)
        vmta = self.d.router.vmta_for(action.to_vmta)
        queue = self.d.router.queue_name(domain, vmta)
        log.info(
            "queue %s: %d recipients of message %d rerouted to %s",
            action.queue,
            len(action.rcpts),
            action.msg_id,
            queue,
        )
        self.execute(
            self.sched.add(
                self.d.queue_for_add(queue),
                action.msg_id,
                action.rcpts,
                action.arrival,
                self.d.clock.wall(),
                attempts=action.attempts,
                next_attempt=action.next_attempt,
            )
        )

    async def _flush(self) -> None:
        """Make this turn's outcomes durable (``PendingOutcomes.flush``, D4's order)."""
        await self.outcomes.flush(self._spool())

    # ---- sessions --------------------------------------------------------------------

    def _source_for(self, vmta: str, address: str | None) -> SourceHost | None:
        """The source (bind IP, EHLO name) for a new connection: the one the scheduler chose
        (source-IP limits and disabled sources are its business), else round robin."""
        if vmta not in self._sources:
            hosts: list[SourceHost] = []
            if vmta != DEFAULT_VMTA and vmta in self.d.config.vmtas:
                for sh in self.d.config.vmtas[vmta].source_hosts:
                    hosts.append(SourceHost(address=str(sh.first), hostname=sh.hostname))
            self._sources[vmta] = SourceChooser(hosts) if hosts else None
        chooser = self._sources[vmta]
        if chooser is None:
            return None
        if address is not None:
            for source in chooser.sources:
                if source.address == address:
                    return source
        return chooser.choose()

    async def _connect(self, action: Connect) -> None:
        try:
            await self._connect_unsafe(action)
        except Exception:
            log.exception("queue %s: connecting failed unexpectedly", action.queue)
            if action.connection_id not in self.conn_queue:
                outcome = Outcome.transient("451 4.4.0 internal error while connecting", Scope.SITE)
                self.execute(
                    self.sched.connection_failed(action.connection_id, outcome, self.d.clock.wall())
                )
            return
        await self._serve(action.connection_id)

    async def _serve(self, connection_id: int) -> None:
        """The open connection's task: carry out each Deliver the scheduler gives it, until
        the session ends. One task per connection instead of one per Deliver (a task costs
        several Python-level calls; a future does not). A Deliver that comes while this one
        is busy gets a task of its own, as before."""
        loop = asyncio.get_running_loop()
        # The connection just opened: the planner may give it mail now (when the task ended
        # here, its done-callback woke the planner; this task goes on, so it wakes it).
        self.d.wake()
        while connection_id in self.sessions and not self._stopping:
            waiter: asyncio.Future[Deliver | None] = loop.create_future()
            self._idle[connection_id] = waiter
            try:
                action = await waiter
            finally:
                if self._idle.get(connection_id) is waiter:
                    del self._idle[connection_id]
            if action is None:
                return
            await self._deliver(action)
            self.d.wake()

    async def _connect_unsafe(self, action: Connect) -> None:
        queue = action.queue
        domain, vmta = parse_queue_name(queue)
        policy = self.d.config.policy_for(queue)
        settings = delivery_settings(
            policy,
            hostname=self.d.hostname,
            route=route_settings(policy, names=self._local_names, endpoints=self.d.bound),
        )
        source = self._source_for(vmta, action.source)
        if source is not None:
            settings = settings.with_source(source)
        result = await open_session(domain, settings, self.resolver, self.rng)
        now = self.d.clock.wall()
        if isinstance(result, ConnectFailure):
            if settings.route.log_fallback_failures:
                for event in result.fallbacks:
                    text = f"skip of MX {event.host} ({event.address}): {event.reason}"
                    log.info("queue %s: %s", queue, text)
                    self.notices.record_queue(queue, text, settings.source_address, event.address)
            if result.outcome.kind is OutcomeKind.TRANSIENT:
                self.notices.record_queue(queue, result.outcome.text, settings.source_address, "")
            self.execute(self.sched.connection_failed(action.connection_id, result.outcome, now))
            return
        if self._stopping:
            await result.close()
            return
        self.sessions[action.connection_id] = result
        self.conn_queue[action.connection_id] = queue
        self.sched.connection_opened(action.connection_id, now)

    async def _deliver(self, action: Deliver) -> None:
        try:
            await self._deliver_unsafe(action)
        except Exception:
            log.exception("queue %s: delivery failed unexpectedly", action.queue)
            if action.connection_id not in self._reported_ids:
                outcome = Outcome.transient("451 4.3.0 internal error in delivery", Scope.SESSION)
                results = [
                    Result(msg_id=t.msg_id, rcpts=t.rcpts, outcome=outcome)
                    for t in action.transactions
                ]
                self.execute(self.sched.report(action.connection_id, results, self.d.clock.wall()))
            await self._end_session(action.connection_id)
        finally:
            self._reported_ids.discard(action.connection_id)

    async def _deliver_unsafe(self, action: Deliver) -> None:
        session = self.sessions.get(action.connection_id)
        spool = self._spool()
        assert spool is not None
        transfers: list[Transfer] = []
        results: list[Result] = []
        cache = self.d.bodies
        bodies: list[bytes | BaseException] = []
        missing: list[int] = []
        for txn in action.transactions:
            cached = cache.get(txn.msg_id)
            if cached is None:
                missing.append(len(bodies))
                bodies.append(b"")
            else:
                bodies.append(cached)
        if missing:
            loaded = await asyncio.gather(
                *(spool.load_body(action.transactions[k].msg_id) for k in missing),
                return_exceptions=True,
            )
            for k, body in zip(missing, loaded, strict=True):
                bodies[k] = body
        for txn, body in zip(action.transactions, bodies, strict=True):
            envelope = self.d.envelopes.get(txn.msg_id)
            if isinstance(body, BaseException) or envelope is None or session is None:
                why = "no session" if session is None else "cannot load the message"
                if isinstance(body, BaseException):
                    why = f"{why}: {body}"
                log.error("queue %s: message %d: %s", action.queue, txn.msg_id, why)
                outcome = Outcome.transient(f"451 4.3.0 {why}", Scope.MESSAGE)
                results.append(Result(msg_id=txn.msg_id, rcpts=txn.rcpts, outcome=outcome))
                continue
            transfers.append(Transfer.from_envelope(txn.msg_id, envelope, txn.rcpts, body))
            self.notices.sizes[txn.msg_id] = len(body)
        if session is None or not transfers:
            now = self.d.clock.wall()
            self._reported_ids.add(action.connection_id)
            self.execute(self.sched.report(action.connection_id, results, now))
            return
        reports = await session.deliver(transfers)
        for report in reports:
            results.extend(report.results)
            if report.possible_duplicate:
                self.possible_duplicates += 1
                log.warning(
                    "queue %s: message %d: no reply after the final dot; "
                    "it will be retried and may be delivered twice",
                    action.queue,
                    report.msg_id,
                )
        now = self.d.clock.wall()
        for result in results:
            outcome = result.outcome
            if outcome.scope is Scope.SESSION and outcome.kind is OutcomeKind.TRANSIENT:
                # A session failure (a 421 mid-transaction) costs the recipient no attempt,
                # so the scheduler returns no Defer; the accounting file still records it.
                carrier = Defer(
                    queue=action.queue,
                    msg_id=result.msg_id,
                    rcpts=result.rcpts,
                    attempts=0,
                    next_attempt=now,
                    text=outcome.text,
                )
                self.notices.record(RecordType.TRANSIENT, carrier, session.info)
        self._reported_ids.add(action.connection_id)
        self.execute(self.sched.report(action.connection_id, results, now), session.info)
        if not session.is_usable:
            await self._end_session(action.connection_id)

    async def _close(self, action: Close) -> None:
        await self._end_session(action.connection_id)

    async def _end_session(self, connection_id: int) -> None:
        """QUIT and forget a session, and tell the scheduler exactly once."""
        if connection_id not in self.conn_queue:
            return
        del self.conn_queue[connection_id]
        session = self.sessions.pop(connection_id, None)
        waiter = self._idle.pop(connection_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # its task ends
        if session is not None:
            await session.close()
        self.execute(self.sched.connection_closed(connection_id, self.d.clock.wall()))
