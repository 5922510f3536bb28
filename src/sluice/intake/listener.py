"""The injection listeners: asyncio servers (uvloop Protocols), caps, timeouts, shutdown.

One :class:`IntakeServer` per daemon owns every ``smtp-listener`` socket, the set of open
sessions, the connection caps, one deadline sweeper (a single task that closes sessions
past their per-command or idle deadline; no timer per connection) and the stores in flight.

Public names:

- :class:`ListenerLimits`: timeouts and connection caps.
- :class:`IntakeServer`: ``await listen(host, port)`` (or ``listen_socket(sock)`` for an
  inherited socket) per listener; ``await shutdown()``.
- :class:`Hooks`: the optional callbacks (hand-off, accounting).

Raises: ``OSError`` from :meth:`IntakeServer.listen` when the address cannot be bound
(the daemon reports it and exits).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

from sluice import smtp
from sluice.clock import Clock
from sluice.intake.inject import Injector, OnAccepted, OnReceived
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.intake.session import PolicySetup, SmtpSession
from sluice.smtp import replies as R

__all__ = ["Hooks", "IntakeServer", "ListenerLimits"]

log = logging.getLogger("sluice.intake")

#: RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
DEFAULT_COMMAND_TIMEOUT = 300.0
#: Postfix ``smtpd_timeout`` (300 s) also bounds idle time between commands.
DEFAULT_IDLE_TIMEOUT = 300.0
#: PowerMTA ``total-max-smtp-in``; ours defaults to Postfix's ``default_process_limit``×10.
DEFAULT_TOTAL_MAX_SMTP_IN = 1000
#: Postfix ``smtpd_client_connection_count_limit`` default is 50.
DEFAULT_MAX_SMTP_IN_PER_CLIENT = 50
#: Listen backlog: a burst of 20+ injectors connecting at once must not see SYN drops.
DEFAULT_BACKLOG = 1024
#: Messages are held in memory until stored, so even ``max-message-size 0`` (unlimited) is
#: capped: 50 MiB, five times Postfix's ``message_size_limit`` default.
DEFAULT_MESSAGE_SIZE_CAP = 50 * 1024 * 1024
#: How long shutdown waits for in-flight stores and 421s before aborting sockets.
DEFAULT_SHUTDOWN_GRACE = 30.0
#: Policy setups remembered (one per policy object; the policy map's own per-address cache,
#: 4096, bounds how many objects there are between its clears).
_SETUP_MEMO_LIMIT = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerLimits:
    """Timeouts (seconds) and caps shared by every listener of one daemon."""

    #: A command line (or a DATA read) must complete within this after its first byte.
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    #: A session with no command in progress is closed after this long.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: ``total-max-smtp-in``: open injection sessions over all listeners.
    total_max_smtp_in: int = DEFAULT_TOTAL_MAX_SMTP_IN
    #: Open sessions from one client address.
    max_smtp_in_per_client: int = DEFAULT_MAX_SMTP_IN_PER_CLIENT
    #: Seconds to wait before greeting a client that may not relay; bytes that arrive in
    #: that pause make it an early talker (554 5.5.0, closed). 0 disables it.
    untrusted_greet_pause: float = 0.0
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    backlog: int = DEFAULT_BACKLOG
    #: Largest message any client may send, whatever its ``max-message-size`` says.
    message_size_cap: int = DEFAULT_MESSAGE_SIZE_CAP
    #: How often the sweeper looks for expired deadlines; None: a tenth of the shorter
    #: timeout, between 20 ms and 1 s.
    sweep_interval: float | None = None

    def __post_init__(self) -> None:
        if min(self.command_timeout, self.idle_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if min(self.total_max_smtp_in, self.max_smtp_in_per_client) < 1:
            raise ValueError("connection caps must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hooks:
    """Callbacks run after a message is stored and its 250 written (errors are logged)."""

    #: Hand-off to the scheduler (or a :class:`~sluice.intake.inject.QueueIndex`).
    on_accepted: OnAccepted | None = None
    #: Accounting ``r`` records.
    on_received: OnReceived | None = None


class IntakeServer:
    """Every injection listener of one daemon, with shared caps, sweeper and shutdown."""

    def __init__(
        self,
        *,
        injector: Injector,
        policies: SourcePolicyMap,
        clock: Clock,
        limits: ListenerLimits | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.injector = injector
        self.policies = policies
        self.clock = clock
        self.limits = limits if limits is not None else ListenerLimits()
        self.hooks = hooks if hooks is not None else Hooks()
        self.sessions: set[SmtpSession] = set()
        self.per_client: dict[str, int] = {}
        self.tasks: set[asyncio.Future[Any]] = set()
        self.shutting_down = False
        #: Set by the daemon while the machine is overloaded (``max-cpu-usage``): (code,
        #: enhanced, text) for new transactions; new connections get it as a 421.
        self.busy: tuple[int, str, str] | None = None
        #: Connections accepted since start (refused ones included), for monitoring.
        self.connections_total = 0
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._all_closed: asyncio.Event | None = None
        self._setups: dict[int, PolicySetup] = {}

    def update_policies(self, policies: SourcePolicyMap) -> None:
        """Reload: new sessions use ``policies``; open sessions keep the policy they had."""
        self.policies = policies
        self._setups.clear()

    def setup_for(self, client_ip: str) -> PolicySetup:
        """The engine limits and fixed replies for a client's source policy (built once)."""
        policy = self.policies.lookup(client_ip)
        setup = self._setups.get(id(policy))
        if setup is None or setup.policy is not policy:
            setup = self._build_setup(policy)
            if len(self._setups) >= _SETUP_MEMO_LIMIT:
                self._setups.clear()  # e.g. many unmatched clients, each its own policy object
            self._setups[id(policy)] = setup
        return setup

    def _build_setup(self, policy: SourcePolicy) -> PolicySetup:
        cap = self.limits.message_size_cap
        size = min(policy.max_message_size, cap) if policy.max_message_size else cap
        host = self.injector.hostname
        extensions = [
            "PIPELINING",
            f"SIZE {size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "DSN",
            "CHUNKING",
        ]
        return PolicySetup(
            policy=policy,
            limits=smtp.Limits(max_message_size=size, max_recipients=policy.max_rcpt_per_message),
            ehlo=R.ehlo_reply(host, extensions),
            helo=R.helo_reply(host),
            greeting=R.greeting(host),
            closing=R.closing(host),
        )

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start one ``smtp-listener``; returns the bound (host, port) (port 0 → chosen)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SmtpSession(self),
            host=host,
            port=port,
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            backlog=self.limits.backlog,
            reuse_address=True,
        )
        return self._started(server)

    async def listen_socket(self, sock: socket.socket) -> tuple[str, int]:
        """Serve an already bound and listening socket (an intake worker's inherited
        listener); returns its (host, port)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SmtpSession(self), sock=sock, backlog=self.limits.backlog
        )
        return self._started(server)

    def _started(self, server: asyncio.Server) -> tuple[str, int]:
        self._servers.append(server)
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.create_task(self._sweep(), name="intake-sweeper")
        # Untyped read: uvloop's Server.sockets is a list where typeshed says tuple, and
        # compiled (mypyc) code checks the declared type.
        sockets: Any = getattr(server, "sockets")  # noqa: B009
        sockname = sockets[0].getsockname()
        log.info("listening for SMTP on %s:%d", sockname[0], sockname[1])
        return str(sockname[0]), int(sockname[1])

    # --- called by sessions ------------------------------------------------------------

    def admit(self, session: SmtpSession, client_ip: str) -> bool:
        """Count a new session; False when shutting down or a cap is reached (→ 421)."""
        self.connections_total += 1
        count = self.per_client.get(client_ip, 0)
        if (
            self.shutting_down
            or len(self.sessions) >= self.limits.total_max_smtp_in
            or count >= self.limits.max_smtp_in_per_client
        ):
            return False
        self.per_client[client_ip] = count + 1
        self.sessions.add(session)
        return True

    def release(self, session: SmtpSession, client_ip: str) -> None:
        """Forget a closed session (only sessions that were admitted)."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        count = self.per_client.get(client_ip, 0) - 1
        if count > 0:
            self.per_client[client_ip] = count
        else:
            self.per_client.pop(client_ip, None)
        if not self.sessions and self._all_closed is not None:
            self._all_closed.set()

    def track(self, future: asyncio.Future[Any]) -> None:
        """Keep a session's store in flight until it is answered (awaited at shutdown)."""
        self.tasks.add(future)
        future.add_done_callback(self.tasks.discard)

    # --- deadlines ---------------------------------------------------------------------

    async def _sweep(self) -> None:
        limits = self.limits
        tick = limits.sweep_interval
        if tick is None:
            tick = min(1.0, max(0.02, min(limits.command_timeout, limits.idle_timeout) / 10))
        clock = self.clock
        while True:
            await asyncio.sleep(tick)
            now = clock.monotonic()
            expired = [s for s in self.sessions if s.deadline <= now]
            for session in expired:
                session.on_timeout()

    # --- shutdown ----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop accepting; open sessions get 421 4.3.2 once any store in flight finished."""
        self.shutting_down = True
        for server in self._servers:
            server.close()
        self._all_closed = asyncio.Event()
        for session in list(self.sessions):
            session.begin_shutdown()
        if self.sessions:
            try:
                await asyncio.wait_for(self._all_closed.wait(), self.limits.shutdown_grace)
            except TimeoutError:
                log.warning("%d sessions still open at shutdown; aborting", len(self.sessions))
                for session in list(self.sessions):
                    session.abort()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
