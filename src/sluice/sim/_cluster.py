"""Several simulators at once: in the current event loop, or in a background thread.

::

    specs = demo_receivers(time_scale=1 / 60)         # hotmail on .20, gmail on .21 ...
    cluster = SimCluster(specs, sample_interval=0.1)
    await cluster.start()        # every receiver on the same port: cluster.port
    ...
    cluster["microsoft"].stats(); await cluster.stop()

    with ThreadedCluster([ReceiverSpec(name="mx", host="127.0.0.20")]) as tc:
        smtplib.SMTP(*tc.address("mx"), source_address=("127.0.0.3", 0)) ...
        tc.stats("mx").source("127.0.0.3").messages

Receivers whose spec leaves the port at 0 share one port (MX delivery goes to one port on
every host); the cluster picks a port free on all of their hosts.

Public names: ReceiverSpec, SimCluster, ThreadedCluster, demo_receivers, new_event_loop.
Raises: OSError when no common port can be bound; RuntimeError from ThreadedCluster when the
background loop fails to start.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sluice.sim._faults import Faults
from sluice.sim._ledger import Ledger
from sluice.sim._profiles import (
    GmailParams,
    GmailProfile,
    MicrosoftParams,
    MicrosoftProfile,
    PlainProfile,
    Profile,
    YahooParams,
    YahooProfile,
)
from sluice.sim._server import DEFAULT_HOSTNAME, SimServer
from sluice.sim._stats import Stats

__all__ = ["ReceiverSpec", "SimCluster", "ThreadedCluster", "demo_receivers", "new_event_loop"]

T = TypeVar("T")

#: Attempts at finding a port free on every host before giving up.
PORT_ATTEMPTS = 20
#: Seconds a ThreadedCluster waits for its loop to start or stop.
THREAD_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverSpec:
    """One receiver of a cluster."""

    name: str
    host: str
    #: 0: the cluster's common port.
    port: int = 0
    #: A fresh profile object per spec (profiles keep state); None: plain.
    profile: Profile | None = None
    faults: Faults | None = None
    hostname: str = DEFAULT_HOSTNAME
    #: The mail domains this receiver stands in for (for a DNS override).
    domains: tuple[str, ...] = field(default_factory=tuple)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed, else asyncio's."""
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class SimCluster:
    """Receivers started together in the current event loop."""

    def __init__(
        self,
        specs: Sequence[ReceiverSpec],
        *,
        port: int = 0,
        record: bool = False,
        timeline: bool = False,
        sample_interval: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"receiver names must be unique: {names}")
        self.specs = tuple(specs)
        self.port = port
        self._options: dict[str, Any] = {
            "record": record,
            "timeline": timeline,
            "sample_interval": sample_interval,
            "clock": clock,
        }
        self.servers: dict[str, SimServer] = {}

    def _build(self, spec: ReceiverSpec, port: int) -> SimServer:
        return SimServer(
            spec.profile,
            host=spec.host,
            port=spec.port or port,
            name=spec.name,
            hostname=spec.hostname,
            faults=spec.faults,
            **self._options,
        )

    async def start(self) -> None:
        """Bind every receiver; ``self.port`` becomes the common port."""
        fixed = [s for s in self.specs if s.port]
        shared = [s for s in self.specs if not s.port]
        for spec in fixed:
            server = self._build(spec, 0)
            await server.start()
            self.servers[spec.name] = server
        if shared:
            await self._start_shared(shared)
        self.servers = {s.name: self.servers[s.name] for s in self.specs}

    async def _start_shared(self, shared: list[ReceiverSpec]) -> None:
        last: OSError | None = None
        for _ in range(PORT_ATTEMPTS if not self.port else 1):
            started: list[SimServer] = []
            try:
                port = self.port
                for spec in shared:
                    server = self._build(spec, port)
                    await server.start()
                    started.append(server)
                    port = server.port
            except OSError as exc:
                for server in started:
                    await server.stop()
                if exc.errno != errno.EADDRINUSE or self.port:
                    raise
                last = exc
                continue
            self.port = port
            for server in started:
                self.servers[server.name] = server
            return
        raise OSError(errno.EADDRINUSE, f"no port free on every simulator host: {last}")

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()

    def __getitem__(self, name: str) -> SimServer:
        return self.servers[name]

    def __iter__(self) -> Iterator[SimServer]:
        return iter(self.servers.values())

    def stats(self) -> dict[str, Stats]:
        return {name: s.stats() for name, s in self.servers.items()}

    def domain_map(self) -> dict[str, tuple[str, int]]:
        """Mail domain → (host, port) of the receiver standing in for it."""
        out: dict[str, tuple[str, int]] = {}
        for spec in self.specs:
            server = self.servers[spec.name]
            for domain in spec.domains:
                out[domain] = server.address
        return out


class ThreadedCluster:
    """A :class:`SimCluster` running in its own thread and event loop, for synchronous code.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Reads (``stats``,
    ``ledger``) run in the cluster's loop and return copies.
    """

    def __init__(self, specs: Sequence[ReceiverSpec], **options: Any) -> None:
        self.cluster = SimCluster(specs, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ThreadedCluster:
        ready: Future[None] = Future()
        loop = new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def boot() -> None:
                try:
                    await self.cluster.start()
                except BaseException as exc:
                    ready.set_exception(exc)
                    raise
                ready.set_result(None)

            try:
                loop.run_until_complete(boot())
            except BaseException:
                return
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="sluice-sim", daemon=True)
        self._thread.start()
        try:
            ready.result(THREAD_TIMEOUT)
        except BaseException:
            self._join()
            raise
        return self

    def _join(self) -> None:
        thread, loop = self._thread, self._loop
        self._thread = self._loop = None
        if thread is not None:
            thread.join(THREAD_TIMEOUT)
        if loop is not None and not loop.is_running():
            loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.cluster.stop(), loop).result(THREAD_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
        self._join()

    def __enter__(self) -> ThreadedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` in the cluster's loop and wait for its result."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the cluster is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(THREAD_TIMEOUT)

    def call(self, fn: Callable[[SimCluster], T]) -> T:
        """Call ``fn(cluster)`` in the cluster's loop and return its result."""

        async def go() -> T:
            return fn(self.cluster)

        return self.run(go())

    @property
    def port(self) -> int:
        return self.cluster.port

    def address(self, name: str) -> tuple[str, int]:
        return self.cluster[name].address

    def server(self, name: str) -> SimServer:
        """The receiver object (read its profile only through :meth:`call`)."""
        return self.cluster[name]

    def stats(self, name: str) -> Stats:
        return self.call(lambda c: c[name].stats())

    def all_stats(self) -> dict[str, Stats]:
        return self.call(lambda c: c.stats())

    def ledger(self, name: str) -> Ledger:
        """A copy of the receiver's ledger (empty unless started with ``record=True``)."""

        def copy(c: SimCluster) -> Ledger:
            out = Ledger()
            src = c[name].ledger
            if src is not None:
                out.entries = list(src.entries)
            return out

        return self.call(copy)

    def reset_stats(self, name: str | None = None) -> None:
        def reset(c: SimCluster) -> None:
            for server in c:
                if name is None or server.name == name:
                    server.reset_stats()

        self.call(reset)


def _host(first: str, offset: int) -> str:
    return str(ipaddress.ip_address(first) + offset)


#: The built-in receivers of ``sluice demo`` and the domains each stands in for.
MICROSOFT_DOMAINS = ("hotmail.com", "outlook.com", "live.com", "msn.com")
GMAIL_DOMAINS = ("gmail.com", "googlemail.com")
YAHOO_DOMAINS = ("yahoo.com", "ymail.com", "aol.com")
LONG_TAIL_DOMAINS = ("example.net", "example.org", "longtail.test")


def demo_receivers(
    *,
    first_host: str = "127.0.0.20",
    time_scale: float = 1.0,
    microsoft: MicrosoftParams | None = None,
    gmail: GmailParams | None = None,
    yahoo: YahooParams | None = None,
) -> list[ReceiverSpec]:
    """Microsoft on ``first_host``, Gmail, Yahoo and a plain long-tail receiver on the next
    three addresses, with every duration multiplied by ``time_scale``."""
    ms = (microsoft or MicrosoftParams()).scaled(time_scale)
    gm = (gmail or GmailParams()).scaled(time_scale)
    ya = (yahoo or YahooParams()).scaled(time_scale)
    return [
        ReceiverSpec(
            name="microsoft",
            host=_host(first_host, 0),
            profile=MicrosoftProfile(ms),
            hostname="mx.hotmail.sim.test",
            domains=MICROSOFT_DOMAINS,
        ),
        ReceiverSpec(
            name="gmail",
            host=_host(first_host, 1),
            profile=GmailProfile(gm),
            hostname="mx.gmail.sim.test",
            domains=GMAIL_DOMAINS,
        ),
        ReceiverSpec(
            name="yahoo",
            host=_host(first_host, 2),
            profile=YahooProfile(ya),
            hostname="mx.yahoo.sim.test",
            domains=YAHOO_DOMAINS,
        ),
        ReceiverSpec(
            name="plain",
            host=_host(first_host, 3),
            profile=PlainProfile(),
            hostname="mx.longtail.sim.test",
            domains=LONG_TAIL_DOMAINS,
        ),
    ]
