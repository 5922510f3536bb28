"""``sluice run -c FILE``: run Sluice in the foreground until SIGTERM or SIGINT.

Logs go to stderr and, when the configuration sets ``log-file``, to that file too. SIGHUP
reloads the configuration (a file with errors is refused and the running one stays). SIGTERM
and SIGINT stop gracefully (open injection sessions get 421, nothing acknowledged is lost).
Exit status: 0 after a clean stop, 2 for a configuration error, 1 when start-up fails (for
example a listener address that cannot be bound).

SMTP sessions run in ``intake-processes`` worker processes (see
:mod:`sluice.daemon.workers`); this process is the queue manager.

Public names: NAME, HELP, add_arguments, intake_processes, run, setup_logging.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import uvloop

from sluice.cli.check_config import EXIT_CONFIG, read_config
from sluice.clock import Clock, ScaledClock
from sluice.config import Config, ConfigError
from sluice.daemon.gctune import tune_gc
from sluice.daemon.lifecycle import Daemon, DaemonOptions
from sluice.daemon.mapping import global_value
from sluice.daemon.system_clock import SystemClock

__all__ = ["HELP", "NAME", "add_arguments", "intake_processes", "run", "setup_logging"]

NAME = "run"
HELP = "run the MTA in the foreground on a configuration file"

log = logging.getLogger("sluice")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="configuration")
    parser.add_argument("--spool", metavar="DIR", help="spool directory (overrides <spool>)")
    parser.add_argument("--hostname", metavar="NAME", help="EHLO/Received name")
    parser.add_argument(
        "--no-deliver", action="store_true", help="accept and spool mail but deliver none"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="run Sluice's clock F times faster (retries, expiry, rates, backoff periods); "
        "for demos and behaviour tests, never for real mail",
    )
    parser.add_argument(
        "--intake-processes",
        type=int,
        metavar="N",
        help="SMTP intake worker processes (overrides intake-processes; 0: intake in the "
        "queue manager's process)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def intake_processes(config: Config, override: int | None) -> int:
    """``--intake-processes``, else ``intake-processes``, else 1 with two or more CPUs."""
    if override is not None:
        return max(0, override)
    value = global_value(config, "intake-processes")
    if isinstance(value, int):
        return max(0, value)
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 1 if cpus >= 2 else 0


def setup_logging(config: Config | None, verbose: bool) -> None:
    """stderr always; the configuration's ``log-file`` too when set."""
    root = logging.getLogger("sluice")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    if config is not None:
        path = global_value(config, "log-file")
        if isinstance(path, str) and path:
            handler = logging.FileHandler(path)
            handler.setFormatter(fmt)
            root.addHandler(handler)


def _reload(daemon: Daemon, path: str) -> None:
    """SIGHUP: read the file again; a file with errors changes nothing."""
    try:
        config = read_config(path)
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays:\n%s", exc)
        return
    except OSError as exc:
        log.error("reload refused: cannot read %s: %s", path, exc.strerror)
        return
    daemon.reload(config)


async def _main(config: Config, options: DaemonOptions, path: str) -> int:
    clock: Clock = SystemClock()
    if options.time_scale != 1.0:
        clock = ScaledClock(clock, options.time_scale)
    daemon = Daemon(config, clock, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, _reload, daemon, path)
    try:
        await daemon.start()
    except OSError as exc:
        log.error("start-up failed: %s", exc)
        await daemon.stop()
        return 1
    tune_gc()
    await daemon.run_until_stopped()
    log.info("stop requested")
    await daemon.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        config = read_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"{args.config}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config, args.verbose)
    if not args.time_scale > 0:
        print("--time-scale must be positive", file=sys.stderr)
        return EXIT_CONFIG
    options = DaemonOptions(
        spool_dir=args.spool,
        hostname=args.hostname,
        deliver=not args.no_deliver,
        time_scale=args.time_scale,
        intake_processes=intake_processes(config, args.intake_processes),
        config_path=os.path.abspath(args.config),
        verbose=args.verbose,
    )
    return int(uvloop.run(_main(config, options, args.config)))
