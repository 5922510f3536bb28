"""The simulator server: one listening socket, a profile, fault knobs, counters, a ledger.

::

    server = SimServer(MicrosoftProfile(MicrosoftParams(hourly_budget=50)),
                       host="127.0.0.20", port=0, sample_interval=0.1)
    await server.start()            # server.port is the bound port
    ...                             # clients deliver to (server.host, server.port)
    s = server.stats()              # s.source("127.0.0.3").messages, s.samples ...
    await server.stop()

Runs in the current event loop (uvloop when the caller installed it). Time for the profile
comes from ``clock`` (default: the loop's monotonic ``time()``).

Public names: SimServer, DEFAULT_HOSTNAME. Raises: OSError from :meth:`SimServer.start`
when the address cannot be bound; RuntimeError when started twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sluice import smtp
from sluice.sim._faults import Faults
from sluice.sim._ledger import Ledger
from sluice.sim._profiles import PlainProfile, Profile, Refusal
from sluice.sim._session import SimSession
from sluice.sim._stats import (
    ConcurrencySample,
    SimEvent,
    SourceCounters,
    Stats,
    summarise,
)
from sluice.smtp import replies as R

__all__ = ["DEFAULT_HOSTNAME", "SimServer"]

DEFAULT_HOSTNAME = "mx.sim.test"
#: Listen backlog: benchmarks open dozens of connections at once (the intake listener's
#: precedent, DEFAULT_BACKLOG 1024).
DEFAULT_BACKLOG = 1024
#: The sampling period the issue-5 must-shows ask for (100 ms).
DEFAULT_SAMPLE_INTERVAL = 0.1


class SimServer:
    """A loopback SMTP receiver with a behaviour profile; see the module docstring."""

    def __init__(
        self,
        profile: Profile | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "",
        hostname: str = DEFAULT_HOSTNAME,
        faults: Faults | None = None,
        record: bool = False,
        timeline: bool = False,
        sample_interval: float | None = None,
        limits: smtp.Limits | None = None,
        clock: Callable[[], float] | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        self.profile: Profile = profile if profile is not None else PlainProfile()
        self.host = host
        self.port = port
        self.name = name or self.profile.name
        self.hostname = hostname
        self.faults = faults or Faults()
        self.limits = limits or smtp.Limits()
        self.ledger: Ledger | None = Ledger() if record else None
        self.timeline = timeline
        self.sample_interval = sample_interval
        self.backlog = backlog
        self._clock = clock
        size = self.limits.max_message_size
        extensions = ["PIPELINING", f"SIZE {size or 0}", "8BITMIME", "ENHANCEDSTATUSCODES"]
        self.greeting = R.greeting(hostname, "ESMTP Sluice simulator")
        self.ehlo = R.ehlo_reply(hostname, extensions)
        self.helo = R.helo_reply(hostname)
        self.closing = R.closing(hostname)
        self.accepted = smtp.Reply.of(250, "2.0.0", "Ok: queued")
        self._counters: dict[str, SourceCounters] = {}
        self._sessions: set[SimSession] = set()
        self._current = 0
        self._peak = 0
        self._received = 0
        self._samples: list[ConcurrencySample] = []
        self._events: list[SimEvent] = []
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sampler: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen; ``self.port`` becomes the bound port."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        server = await loop.create_server(
            lambda: SimSession(self),
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
        )
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        if self.sample_interval:
            self._sampler = loop.call_later(self.sample_interval, self._sample)

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for session in list(self._sessions):
            session.abort()
        await server.wait_closed()
        # Let connection_lost callbacks of the aborted transports run.
        await asyncio.sleep(0)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def now(self) -> float:
        """The server clock (the loop's ``time()`` unless a clock was injected)."""
        if self._clock is not None:
            return self._clock()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    # --- what a test reads -------------------------------------------------------------

    def stats(self) -> Stats:
        """A frozen snapshot of everything counted so far (call it in the server's loop)."""
        by_ip, total = summarise(self._counters, peak=self._peak, current=self._current)
        return Stats(
            name=self.name,
            profile=self.profile.name,
            host=self.host,
            port=self.port,
            taken_at=self.now(),
            by_ip=by_ip,
            total=total,
            samples=tuple(self._samples),
            events=tuple(self._events),
        )

    def reset_stats(self) -> None:
        """Forget the counters, samples, events and ledger (not the profile's state); open
        connections stay counted as open."""
        open_by_ip: dict[str, int] = {}
        for s in self._sessions:
            open_by_ip[s.ip] = open_by_ip.get(s.ip, 0) + 1
        self._counters = {}
        for ip, n in open_by_ip.items():
            c = self._counters_for(ip)
            c.current = c.peak = n
        self._peak = self._current
        self._samples = []
        self._events = []
        if self.ledger is not None:
            self.ledger = Ledger()
        for s in self._sessions:
            s.counters = self._counters_for(s.ip)

    # --- called by sessions ------------------------------------------------------------

    def _counters_for(self, ip: str) -> SourceCounters:
        c = self._counters.get(ip)
        if c is None:
            c = self._counters[ip] = SourceCounters()
            if self.timeline:
                c.message_times = []
                c.connect_times = []
        return c

    def session_opened(self, session: SimSession) -> SourceCounters:
        self._sessions.add(session)
        c = self._counters_for(session.ip)
        c.connections += 1
        if c.connect_times is not None:
            c.connect_times.append(self.now())
        c.current += 1
        c.peak = max(c.peak, c.current)
        self._current += 1
        self._peak = max(self._peak, self._current)
        return c

    def session_closed(self, session: SimSession) -> None:
        self._sessions.discard(session)
        c = session.counters
        if c.current > 0:
            c.current -= 1
        if self._current > 0:
            self._current -= 1

    def refused(self, ip: str, refusal: Refusal, c: SourceCounters) -> None:
        tags = c.tags
        tags[refusal.tag] = tags.get(refusal.tag, 0) + 1
        if self.timeline:
            self._events.append(
                SimEvent(at=self.now(), ip=ip, code=refusal.reply.code, tag=refusal.tag)
            )

    def hangup_due(self) -> bool:
        """Counts a message received in full; True when ``hangup_every`` says hang up."""
        every = self.faults.hangup_every
        if not every:
            return False
        self._received += 1
        return self._received % every == 0

    def _sample(self) -> None:
        loop = self._loop
        if loop is None or self._server is None or not self.sample_interval:
            return
        self._samples.append(
            ConcurrencySample(
                at=self.now(),
                total=self._current,
                by_ip={ip: c.current for ip, c in self._counters.items() if c.current},
            )
        )
        self._sampler = loop.call_later(self.sample_interval, self._sample)
