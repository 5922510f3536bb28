"""The daemon: start-up (spool recovery), the running parts, and a graceful stop.

:class:`Daemon` wires the parts for one configuration: the spool (``<spool PATH>``), the
scheduler (fed by recovery and by intake's hand-off), the injection listeners
(``smtp-listener``), the accounting files and the delivery manager. Start-up order keeps the
promise of the 250: the spool is opened and recovered *before* any listener accepts mail.
Stop order is the reverse: listeners refuse new sessions (421), in-flight stores finish,
deliveries end, then the spool closes.

Public names: Daemon, DaemonOptions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import time
from dataclasses import dataclass, field

from sluice.acct.records import AcctRecord, RecordType
from sluice.acct.writer import AcctLog
from sluice.bounce import Classifier
from sluice.clock import Clock, ScaledClock
from sluice.config import Config, ConfigError, parse_queue_name
from sluice.config.model import Listener
from sluice.daemon.bodycache import BodyCache
from sluice.daemon.cpu import CPU_SAMPLE_INTERVAL, cpu_busy, read_cpu_times
from sluice.daemon.manager import DeliveryManager
from sluice.daemon.mapping import (
    ConfigSourceMap,
    acct_settings,
    configured_host_name,
    global_value,
    known_vmtas,
    listener_limits,
    queue_settings,
    source_ips,
)
from sluice.daemon.mgmt_map import mgmt_settings
from sluice.daemon.routing_map import QueueRouter
from sluice.daemon.wakeup import Wakeup
from sluice.daemon.warmup_map import warmup_assignments, warmup_plans
from sluice.daemon.workers import STOP_MARGIN, IntakeWorkers, WorkerOptions, bind_listener
from sluice.intake.inject import Injector
from sluice.intake.listener import Hooks, IntakeServer
from sluice.message import Envelope, MessageId, RcptState
from sluice.mgmt import MgmtServer
from sluice.sched import (
    Action,
    CpuGate,
    QueueSettings,
    QueueThrottles,
    Scheduler,
    WarmupState,
)
from sluice.sched.cpu import REFUSAL_REPLY
from sluice.spool import AnySpool, Spool, open_spool, spool_kind_at

__all__ = ["Daemon", "DaemonOptions"]


def _setting_text(config: Config, name: str) -> str | None:
    setting = config.global_settings.get(name)
    return None if setting is None else setting.text


log = logging.getLogger("sluice.daemon")

#: Where the spool lives when the configuration has no ``<spool PATH>`` (PowerMTA's is
#: /var/spool/pmta).
DEFAULT_SPOOL_DIR = "/var/spool/sluice"
#: ``spool-group-commit-ms`` default: a commit gathers what arrives in the millisecond after
#: its first write (DESIGN §2: "up to ~2 ms or N messages"). Measured in the relay benchmark
#: (docs/benchmarks.md): against 0, a fifth less CPU per message and a sixth more messages
#: per second; the price is up to a millisecond more before each 250.
DEFAULT_GROUP_COMMIT_MS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonOptions:
    """Command-line overrides for one run."""

    #: Spool directory; None: the first ``<spool PATH>``, else :data:`DEFAULT_SPOOL_DIR`.
    spool_dir: str | None = None
    #: EHLO / Received name; None: ``host-name`` or the machine's name.
    hostname: str | None = None
    #: Start delivering (False: intake and spool only, e.g. for intake benchmarks).
    deliver: bool = True
    #: Sluice's time runs this many times faster than real time (``sluice run --time-scale``;
    #: demos and behaviour tests over hours): the clock given to the daemon must be a
    #: :class:`~sluice.clock.ScaledClock` with the same scale.
    time_scale: float = 1.0
    #: Intake worker processes (``intake-processes``); 0: intake in this process. Set by
    #: ``sluice run``; a daemon built in-process (tests, demo) keeps intake with it.
    intake_processes: int = 0
    #: The configuration file, which intake workers read themselves (needed when
    #: ``intake_processes`` > 0).
    config_path: str | None = None
    verbose: bool = False
    extra: dict[str, str] = field(default_factory=dict)


class Daemon:
    """One running Sluice: spool, scheduler, listeners, accounting, delivery."""

    def __init__(self, config: Config, clock: Clock, options: DaemonOptions | None = None):
        self.config = config
        self.clock = clock
        self.options = options or DaemonOptions()
        self.router = QueueRouter(config)
        self.classifier = Classifier.from_config(
            (p.pattern, p.category) for p in config.bounce_category_patterns
        )
        self.scheduler = Scheduler(
            rng=random.Random(),
            settings_for=self._settings_for,
            total_max_smtp_out=self._total_max_smtp_out(),
        )
        self.spool: Spool | None = None
        self.intake: IntakeServer | None = None
        #: Intake in worker processes (``intake-processes`` > 0) instead of :attr:`intake`.
        self.workers: IntakeWorkers | None = None
        #: Stores through this process's spool (in-process intake, HTTP injection).
        self.injector: Injector | None = None
        #: The management HTTP server (``http-mgmt-port``), None when not configured.
        self.mgmt: MgmtServer | None = None
        self.acct: AcctLog | None = None
        #: Envelopes of messages still in the system (needed to deliver and to account).
        self.envelopes: dict[MessageId, Envelope] = {}
        #: Bodies of freshly stored messages, for their first delivery (a cache).
        self.bodies = BodyCache()
        #: Recipients of each message not yet in a final state.
        self.remaining: dict[MessageId, int] = {}
        self.bound: list[tuple[str, int]] = []
        self._settings_cache: dict[str, QueueSettings] = {}
        #: Warm-up plans (Sluice extension, docs/shaping.md §6) and the queues given throttles.
        self.warmup = WarmupState()
        plans = warmup_plans(config)
        for assignment in warmup_assignments(config):
            self.warmup.assign(assignment.vmta, plans[assignment.plan], assignment.start)
        self._throttled: set[str] = set()
        #: Inbound ``<pattern-list>`` rules per client address: (regex, vmta) pairs.
        self._pattern_rules: dict[str, tuple[tuple[re.Pattern[str], str | None], ...]] = {}
        self._wakeup = Wakeup()
        self._stopping = asyncio.Event()
        self.manager: DeliveryManager | None = None
        #: Actions produced before the delivery manager started (recovery of expired mail).
        self.pending_actions: list[Action] = []
        self._cpu_task: asyncio.Task[None] | None = None

    # ---- configuration lookups -----------------------------------------------------

    def _settings_for(self, queue: str) -> QueueSettings:
        cached = self._settings_cache.get(queue)
        if cached is None:
            domain, vmta = parse_queue_name(queue)
            cached = queue_settings(
                self.config.policy_for(queue), source_ips(self.config, vmta, domain)
            )
            self._settings_cache[queue] = cached
        return cached

    def queue_for_add(self, queue: str) -> str:
        """Give a queue its warm-up throttle the first time mail goes to it."""
        if queue in self._throttled:
            return queue
        self._throttled.add(queue)
        domain, vmta = parse_queue_name(queue)
        plan = self.warmup.plan_of(vmta)
        if plan is not None and plan.overflow_vmta is None:
            throttle = self.warmup.throttle(vmta, plan.group_of(domain))
            self.scheduler.configure(
                queue, self._settings_for(queue), QueueThrottles(message=(throttle,))
            )
        return queue

    def _total_max_smtp_out(self) -> int:
        value = global_value(self.config, "total-max-smtp-out")
        return int(value) if isinstance(value, int) else 0

    @property
    def time_scale(self) -> float:
        return self.options.time_scale

    @property
    def hostname(self) -> str:
        name = configured_host_name(self.config, self.options.hostname)
        return name or socket.getfqdn() or "localhost"

    def spool_dir(self) -> str:
        if self.options.spool_dir:
            return self.options.spool_dir
        if self.config.spools:
            return self.config.spools[0].path
        return DEFAULT_SPOOL_DIR

    # ---- start and stop ------------------------------------------------------------

    async def start(self) -> None:
        """Open and recover the spool, then start accounting, delivery and the listeners."""
        started = time.monotonic()
        linger_ms = global_value(self.config, "spool-group-commit-ms", DEFAULT_GROUP_COMMIT_MS)
        linger = linger_ms / 1000.0 if isinstance(linger_ms, int) else 0.0
        # defer=0: marks and removes are not held back for a store's commit (the linger
        # above batches them with whatever comes). Holding them 2 ms slowed delivery
        # below the seed's 5000/h at 180x scaled time when the manager awaited each flush
        # (shaping_e2e RP-001); the relay measured no gain from it since flushes run beside
        # the planner.
        path = self.spool_dir()
        kind = spool_kind_at(path) or str(global_value(self.config, "spool-format", "segment"))
        self.spool = await open_spool(path, kind=kind, linger=linger, defer=0.0)
        recovered = self._recover()
        log.info(
            "spool %s (%s) recovered: %d messages, %d queued recipients in %.1fs",
            path,
            kind,
            recovered[0],
            recovered[1],
            time.monotonic() - started,
        )
        settings = acct_settings(self.config)
        if settings:
            self.acct = AcctLog.open(settings, self.clock)
        if self.options.deliver:
            manager = DeliveryManager(self)
            self.manager = manager
            manager.start()
        self.injector = Injector(
            spool=self.spool,
            clock=self.clock,
            hostname=self.hostname,
            known_vmtas=known_vmtas(self.config),
            boot_token=f"{int(self.clock.wall())}",
        )
        mgmt_conf = mgmt_settings(self.config, hostname=self.hostname)
        if mgmt_conf is not None:
            self.mgmt = MgmtServer(
                mgmt_conf,
                injector=self.injector,
                policies=ConfigSourceMap(self.config),
                on_received=self._received,
                clock=self.clock,
            )
            try:
                bound = await self.mgmt.start()
            except ConfigError as exc:
                raise OSError(f"management interface: {exc}") from exc
            log.info("management HTTP on %s", ", ".join(f"{h}:{p}" for h, p in bound))
        if self.options.intake_processes > 0 and self.config.listeners:
            await self._start_workers(self.spool)
        else:
            self.intake = IntakeServer(
                injector=self.injector,
                policies=ConfigSourceMap(self.config),
                clock=self.clock,
                limits=listener_limits(self.config),
                hooks=Hooks(on_received=self._received),
            )
            for listener in self.config.listeners:
                self.bound.append(await self.intake.listen(*self._listen_address(listener)))
        limit = self._cpu_limit()
        if limit is not None:
            self._cpu_task = asyncio.get_running_loop().create_task(
                self._cpu_watch(CpuGate(limit)), name="cpu-watch"
            )
        log.info("sluice ready in %.1fs", time.monotonic() - started)

    @staticmethod
    def _listen_address(listener: Listener) -> tuple[str, int]:
        host = "0.0.0.0" if listener.listen.address is None else str(listener.listen.address)
        return host, listener.listen.port

    async def _start_workers(self, spool: AnySpool) -> None:
        """Bind every listener here, then start the intake worker processes on them."""
        if self.options.config_path is None:
            raise OSError("intake worker processes need the configuration file's path")
        limits = listener_limits(self.config)
        sockets = []
        try:
            for listener in self.config.listeners:
                sock = bind_listener(*self._listen_address(listener), limits.backlog)
                sockets.append(sock)
                name = sock.getsockname()
                self.bound.append((str(name[0]), int(name[1])))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self.workers = IntakeWorkers(
            WorkerOptions(
                count=self.options.intake_processes,
                config_path=self.options.config_path,
                hostname=self.options.hostname,
                time_scale=self.options.time_scale,
                clock_origin=self.clock.origin if isinstance(self.clock, ScaledClock) else None,
                verbose=self.options.verbose,
                stop_timeout=limits.shutdown_grace + STOP_MARGIN,
            ),
            sockets,
            spool,
            self._received,
            self.bodies,
        )
        await self.workers.start()
        log.info(
            "%d intake worker process(es) on %s",
            self.options.intake_processes,
            ", ".join(f"{h}:{p}" for h, p in self.bound),
        )

    def _cpu_limit(self) -> float | None:
        value = global_value(self.config, "max-cpu-usage")
        return float(value) if isinstance(value, int) and value > 0 else None

    async def _cpu_watch(self, gate: CpuGate) -> None:
        """``max-cpu-usage``: sample the machine's CPU once a second; above the limit stop
        opening deliveries and refuse new injections (451/421 4.3.2) until load falls."""
        previous = read_cpu_times()
        while True:
            await asyncio.sleep(CPU_SAMPLE_INTERVAL)
            current = read_cpu_times()
            busy = cpu_busy(previous, current)
            previous = current
            changed = gate.sample(self.clock.monotonic(), busy)
            if changed is None:
                continue
            self.scheduler.hold_connections(changed)
            if self.intake is not None:
                self.intake.busy = REFUSAL_REPLY if changed else None
            if self.workers is not None:
                self.workers.set_busy(changed)
            if self.mgmt is not None:
                self.mgmt.busy = REFUSAL_REPLY if changed else None
            if changed:
                log.warning(
                    "CPU above max-cpu-usage %.0f%%: holding new deliveries and refusing "
                    "injections with 4.3.2 until load falls",
                    gate.limit,
                )
            else:
                log.info("CPU load below max-cpu-usage again: delivering and accepting")
            self.wake()

    async def stop(self) -> None:
        """Graceful stop: 421 to open sessions, finish stores, stop delivery, close spool."""
        if self._cpu_task is not None:
            self._cpu_task.cancel()
        if self.mgmt is not None:
            await self.mgmt.stop()
        if self.intake is not None:
            await self.intake.shutdown()
        if self.workers is not None:
            await self.workers.shutdown()
        if self.manager is not None:
            await self.manager.stop()
        if self.acct is not None:
            self.acct.close()
        if self.spool is not None:
            await self.spool.close()
        log.info("sluice stopped")

    def reload(self, config: Config) -> list[str]:
        """Apply a new configuration without a restart (``pmta reload``; SIGHUP).

        Queues, sources, routes, limits, backoff rules, pools and accounting classification
        take the new settings at once (open sessions finish under the old ones). Directives
        that cannot change while running (listeners, spool, resolver, accounting files: the
        table's ``reload_safe`` flag) keep their old effect; their names are returned so the
        caller can say a restart is needed.
        """
        old = self.config
        needs_restart = sorted(
            spec.name
            for spec in config.table
            if not spec.reload_safe
            and _setting_text(old, spec.name) != _setting_text(config, spec.name)
        )
        if [(x.listen, x.origin.line) for x in old.listeners] != [
            (x.listen, x.origin.line) for x in config.listeners
        ] and "smtp-listener" not in needs_restart:
            needs_restart.append("smtp-listener")
        self.config = config
        self.router = QueueRouter(config)
        self.classifier = Classifier.from_config(
            (p.pattern, p.category) for p in config.bounce_category_patterns
        )
        self._settings_cache.clear()
        self._pattern_rules.clear()
        self.scheduler.reconfigure(self._settings_for)
        if self.intake is not None:
            self.intake.update_policies(ConfigSourceMap(config))
        if self.injector is not None:  # in-process intake shares this injector
            self.injector.set_known_vmtas(known_vmtas(config))
        if self.workers is not None:
            self.workers.reload()
        new_mgmt = mgmt_settings(config, hostname=self.hostname)
        if self.mgmt is not None and new_mgmt is not None:  # the port itself needs a restart
            try:
                self.mgmt.update(new_mgmt, ConfigSourceMap(config))
            except ConfigError as exc:
                log.error("management interface keeps its settings: %s", exc)
        if self.manager is not None:
            self.manager.reconfigured()
        log.info(
            "configuration reloaded%s",
            f"; restart needed for: {', '.join(needs_restart)}" if needs_restart else "",
        )
        return needs_restart

    async def run_until_stopped(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    # ---- the message flow ----------------------------------------------------------

    def _recover(self) -> tuple[int, int]:
        assert self.spool is not None
        now = self.clock.wall()
        messages = rcpts = 0
        for spooled in self.spool.recover():
            pending = {
                index: (progress.attempts, progress.next_attempt)
                for index, progress in enumerate(spooled.rcpts)
                if progress.state is RcptState.QUEUED
            }
            if not pending:
                continue
            messages += 1
            rcpts += len(pending)
            self._enqueue(spooled.msg_id, spooled.envelope, now, pending=pending)
        return messages, rcpts

    def _accepted(self, msg_id: MessageId, envelope: Envelope, size: int = 0) -> None:
        """The hand-off: the message is durable (and acknowledged, for injected mail);
        queue it. ``size`` in octets feeds ``max-data-volume-rate``."""
        self._enqueue(msg_id, envelope, self.clock.wall(), size=size)
        self._wakeup.set()

    def _enqueue(
        self,
        msg_id: MessageId,
        envelope: Envelope,
        now: float,
        *,
        size: int = 0,
        pending: dict[int, tuple[int, float | None]] | None = None,
    ) -> None:
        """Register a durable message and queue its recipients. New mail (``pending`` None)
        passes the cold-VMTA rule; recovered mail queues only its ``pending`` recipients,
        each with its stored attempts and next retry, one scheduler entry per group."""
        self.envelopes[msg_id] = envelope
        self.remaining[msg_id] = len(envelope.recipients if pending is None else pending)
        vmta = self.router.vmta_for(self._requested_vmta(envelope))
        by_queue = self.router.queues_of(envelope, vmta, now if pending is None else None)
        for queue, indexes in by_queue.items():
            groups: dict[tuple[int, float | None], list[int]] = {}
            for index in indexes:
                if pending is None:
                    groups.setdefault((0, None), []).append(index)
                elif index in pending:
                    groups.setdefault(pending[index], []).append(index)
            name = self.queue_for_add(queue)
            for (attempts, next_attempt), group in groups.items():
                self._apply(
                    self.scheduler.add(
                        name,
                        msg_id,
                        group,
                        envelope.arrival,
                        now,
                        attempts=attempts,
                        next_attempt=next_attempt,
                        size=size,
                    )
                )

    def _requested_vmta(self, envelope: Envelope) -> str | None:
        """The VMTA or pool a message asks for. A ``<pattern-list>`` attached to its source
        (``pattern-list NAME`` in ``<source>``) comes first: the first ``mail-from /re/
        virtual-mta=X`` rule matching the sender wins (powermta.md §6); else what intake
        chose (``X-Virtual-MTA``, then ``default-virtual-mta``)."""
        rules = self._pattern_rules.get(envelope.source_ip)
        if rules is None:
            rules = ()
            try:
                policy = self.config.source_for(envelope.source_ip)
            except ValueError:
                policy = None
            name = None if policy is None else policy.settings.get("pattern-list")
            if name is not None and isinstance(name.value, str):
                found = self.config.pattern_lists.get(name.value)
                if found is not None:
                    rules = tuple(
                        (r.pattern, r.virtual_mta)
                        for r in found.rules
                        if r.field == "mail-from" and r.virtual_mta
                    )
            if len(self._pattern_rules) > 4096:
                self._pattern_rules.clear()
            self._pattern_rules[envelope.source_ip] = rules
        for pattern, vmta in rules:
            if pattern.search(envelope.sender):
                return vmta
        return envelope.vmta

    def accept_local(self, msg_id: MessageId, envelope: Envelope, size: int = 0) -> None:
        """Queue a message Sluice made itself (a DSN), already durable in the spool."""
        self._accepted(msg_id, envelope, size)

    @property
    def postmaster(self) -> str:
        value = global_value(self.config, "postmaster")
        if isinstance(value, str) and value:
            return value
        return f"postmaster@{self.hostname}"

    def _received(self, msg_id: MessageId, envelope: Envelope, size: int) -> None:
        """Intake's hook after the 250: queue the message, write its ``r`` records."""
        self._accepted(msg_id, envelope, size)
        if self.acct is None:
            return
        now = self.clock.wall()
        for rcpt in envelope.recipients:
            self.acct.record(
                AcctRecord(
                    type=RecordType.RECEIVED,
                    time_logged=now,
                    time_queued=envelope.arrival,
                    orig=envelope.sender,
                    rcpt=rcpt.address,
                    orcpt=rcpt.orcpt or "",
                    src_type=envelope.source_type,
                    src_mta=envelope.source_helo,
                    dlv_size=size,
                    vmta=envelope.vmta or "",
                    job_id=envelope.job_id or "",
                    env_id=envelope.env_id or "",
                )
            )

    def _apply(self, actions: list[Action]) -> None:
        """Actions produced outside the delivery loop (expiry at add) go to the manager."""
        if not actions:
            return
        if self.manager is not None:
            self.manager.execute(actions)
        else:
            self.pending_actions.extend(actions)

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def wakeup(self) -> Wakeup:
        return self._wakeup
