"""Running the demo: receivers, DNS, Sluice on the seed, the campaign, progress, summary.

:func:`run_demo` does it all in the running event loop:

1. a working directory (spool, accounting file, the configuration used);
2. the simulated ISPs (``sluice.sim.SimCluster``, one shared port on 127.0.0.20–23) on the
   demo clock, and a loopback DNS server (``sluice.net.DnsServer``) with their MX records;
3. the seed configuration from the package data, listener moved, demo lines appended
   (:mod:`sluice.demo._world`), loaded exactly as ``check-config`` loads a file;
4. the daemon (``sluice.daemon.Daemon``) in this loop, on a :class:`ScaledClock`;
5. the campaign injected over SMTP while the display shows every queue;
6. when every message is final (or at the timeout): stop, read the accounting file and the
   receivers' counters, check, summarise.

Public names: DemoOptions, run_demo, DEFAULT_MESSAGES, DEFAULT_TIMEOUT, DEFAULT_TIME_SCALE.
Raises: ConfigError (the demo configuration does not load — a bug), OSError (ports,
working directory).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from sluice.clock import ScaledClock
from sluice.config import Config, load_config
from sluice.daemon.lifecycle import Daemon, DaemonOptions
from sluice.daemon.system_clock import SystemClock
from sluice.demo._campaign import campaign
from sluice.demo._display import REFRESH_PER_SECOND, Display, Frame, LineDisplay, LiveDisplay
from sluice.demo._inject import Injector
from sluice.demo._progress import AcctTail, Progress
from sluice.demo._summary import DemoSummary, read_acct, render_summary, summarize
from sluice.demo._world import (
    DEMO_HOSTNAME,
    Story,
    demo_config_text,
    free_port,
    receivers,
    seed_text,
    vmta_of_source,
    zones,
)
from sluice.net.dnsserver import DnsServer
from sluice.sched import QueueMode, QueueSnapshot
from sluice.sim import ReceiverSpec, SimCluster

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MESSAGES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIME_SCALE",
    "DemoOptions",
    "run_demo",
]

#: The campaign's default size.
DEFAULT_MESSAGES = 2000
#: Injection sessions at once.
DEFAULT_CONCURRENCY = 20
#: Real seconds before the demo gives up (the whole demo must stay under two minutes).
DEFAULT_TIMEOUT = 110.0
#: Demo seconds per real second (plain story): the seed's hour lasts a minute.
DEFAULT_TIME_SCALE = Story.PLAIN.time_scale
#: Real seconds the run waits, once nothing is pending, for DSNs still being made.
DSN_GRACE = 2.0
#: Seconds given to a graceful stop of the daemon and the receivers.
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """The knobs of ``sluice demo``."""

    messages: int = DEFAULT_MESSAGES
    #: Messages per second injected (0: as fast as Sluice accepts them).
    speed: float = 0.0
    concurrency: int = DEFAULT_CONCURRENCY
    story: Story = Story.PLAIN
    #: Demo seconds per real second; None: the story's (60 plain, 120 throttle).
    time_scale: float | None = None
    #: Share of the newsletter list that is dead (550 user unknown).
    dead_share: float = 0.01
    live: bool = True
    timeout: float = DEFAULT_TIMEOUT
    #: Keep the working directory (else it is removed); None: a new temporary one.
    keep: bool = False
    workdir: str | None = None


async def run_demo(options: DemoOptions, console: Console) -> DemoSummary:
    """Run the demo and return its summary (already printed to ``console``)."""
    workdir = options.workdir or tempfile.mkdtemp(prefix="sluice-demo-")
    os.makedirs(workdir, exist_ok=True)
    try:
        summary = await _run(options, console, workdir)
    finally:
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return summary


def _load(path: str) -> Config:
    return load_config(path, read_text=lambda p: Path(p).read_text("utf-8"), glob=glob.glob)


async def _run(options: DemoOptions, console: Console, workdir: str) -> DemoSummary:
    clock = ScaledClock(SystemClock(), options.time_scale or options.story.time_scale)
    specs = receivers(options.story)
    # The simulators count their windows in demo time too (wall differences only).
    cluster = SimCluster(specs, clock=clock.wall)
    await cluster.start()
    try:
        with DnsServer(zones(specs)) as dns:
            config_path = os.path.join(workdir, "demo.conf")
            text = demo_config_text(
                seed_text(),
                listen_port=free_port(),
                dns=dns.address,
                smtp_port=cluster.port,
                workdir=workdir,
                mgmt_port=free_port(),
            )
            Path(config_path).write_text(text, "utf-8")
            config = _load(config_path)
            summary = await _with_daemon(
                options=options,
                console=console,
                config=config,
                clock=clock,
                cluster=cluster,
                specs=specs,
            )
    finally:
        await asyncio.wait_for(cluster.stop(), STOP_TIMEOUT)
    if options.keep:
        summary = replace(summary, workdir=workdir)
    render_summary(summary, console)
    return summary


async def _with_daemon(
    *,
    options: DemoOptions,
    console: Console,
    config: Config,
    clock: ScaledClock,
    cluster: SimCluster,
    specs: Sequence[ReceiverSpec],
) -> DemoSummary:
    daemon = Daemon(
        config,
        clock,
        DaemonOptions(
            spool_dir=config.spools[0].path, hostname=DEMO_HOSTNAME, time_scale=clock.scale
        ),
    )
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await asyncio.wait_for(daemon.stop(), STOP_TIMEOUT)

    try:
        await daemon.start()
        return await _campaign_run(
            options=options,
            console=console,
            daemon=daemon,
            stop=stop,
            clock=clock,
            cluster=cluster,
            specs=specs,
        )
    finally:
        await stop()


async def _campaign_run(
    *,
    options: DemoOptions,
    console: Console,
    daemon: Daemon,
    stop: Callable[[], Awaitable[None]],
    clock: ScaledClock,
    cluster: SimCluster,
    specs: Sequence[ReceiverSpec],
) -> DemoSummary:
    config = daemon.config
    acct_path = config.acct_files[0].path or ""
    messages = campaign(options.messages, dead_share=options.dead_share)
    injector = Injector(
        messages, daemon.bound[0], concurrency=options.concurrency, speed=options.speed
    )
    title = (
        f"sluice demo — story {options.story.value}, {options.messages} messages, "
        f"time ×{clock.scale:g}"
    )
    display: Display = LiveDisplay(console, title) if options.live else LineDisplay(console)
    if not options.live:
        console.print(title, markup=False, highlight=False)
    tail = AcctTail(acct_path)
    progress = Progress()
    loop = asyncio.get_running_loop()
    started = loop.time()
    demo_started = clock.wall()
    inject_task = loop.create_task(injector.run(), name="demo-injector")
    completed = False

    def frame(snapshots: list[QueueSnapshot]) -> Frame:
        tail.poll()
        rows = progress.rows(snapshots, tail)
        return Frame(
            elapsed=loop.time() - started,
            demo_elapsed=clock.wall() - demo_started,
            inject=injector.stats,
            rows=tuple(rows),
            pending=len(daemon.remaining),
            changes=tuple(progress.take_changes()),
        )

    display.start()
    idle_since: float | None = None
    try:
        while True:
            snapshots = daemon.scheduler.snapshots()
            display.show(frame(snapshots))
            now = loop.time()
            # The story is over when every message is final and no queue is still backing off
            # (the throttle story shows the return to normal).
            backoff = any(s.mode is QueueMode.BACKOFF for s in snapshots)
            if inject_task.done() and not daemon.remaining and not backoff:
                # Done when every bounce's DSN is final too; a DSN is made just after its
                # original becomes final, so give it a moment before concluding none comes.
                idle_since = now if idle_since is None else idle_since
                if tail.dsn_finals >= tail.bounces or now - idle_since >= DSN_GRACE:
                    completed = True
                    break
            else:
                idle_since = None
            if loop.time() - started >= options.timeout:
                break
            await asyncio.sleep(1.0 / REFRESH_PER_SECOND)
        elapsed = loop.time() - started
        if not inject_task.done():
            inject_task.cancel()
        await asyncio.gather(inject_task, return_exceptions=True)
        await stop()
        display.show(frame(daemon.scheduler.snapshots()), final=True)
    finally:
        display.stop()
    return summarize(
        elapsed=elapsed,
        completed=completed,
        messages=messages,
        accepted=injector.accepted_seqs,
        inject=injector.stats,
        acct=read_acct(acct_path),
        stats=cluster.stats(),
        specs=specs,
        config=config,
        sources=vmta_of_source(config),
    )
