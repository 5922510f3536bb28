"""``sluice demo``: Sluice on the seed's configuration, against simulated ISPs, offline.

With no arguments it needs nothing but this package: it starts loopback receivers for
Microsoft, Gmail, Yahoo and a few long-tail domains, a DNS server pointing at them, and Sluice
on the shipped seed configuration; injects a mixed campaign; shows every queue live; and ends
with a summary of what arrived where, from which source IP. Exit status: 0 when every
accepted message was delivered or bounced with a DSN and the checks hold, 1 otherwise (or on
timeout), 2 for bad arguments, 130 when interrupted.

Public names: NAME, HELP, add_arguments, run.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvloop
from rich.console import Console

from sluice.config import ConfigError
from sluice.demo import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MESSAGES,
    DEFAULT_TIME_SCALE,
    DEFAULT_TIMEOUT,
    DemoOptions,
    Story,
    run_demo,
)

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "demo"
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
HELP = "run a campaign through Sluice on the seed configuration against simulated ISPs"


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _not_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--messages",
        type=_count,
        default=DEFAULT_MESSAGES,
        metavar="N",
        help=f"campaign size: messages to inject (default {DEFAULT_MESSAGES})",
    )
    parser.add_argument(
        "--speed",
        type=_not_negative,
        default=0.0,
        metavar="MSGS_PER_S",
        help="injection rate in messages per second (default 0: as fast as Sluice accepts)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="C",
        help=f"injection sessions at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--story",
        choices=[s.value for s in Story],
        default=Story.THROTTLE.value,
        help="throttle: Microsoft answers 421 RP-001 and the hotmail queues back off, then "
        "recover (the seed's story, default); plain: nobody throttles",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive,
        default=None,
        metavar="X",
        help=f"demo seconds per real second: the seed's hours pass X times faster "
        f"(default {DEFAULT_TIME_SCALE:g} for plain, an hour takes a minute; "
        f"{Story.THROTTLE.time_scale:g} for throttle)",
    )
    parser.add_argument(
        "--dead",
        type=_not_negative,
        default=1.0,
        metavar="PERCENT",
        help="share of the newsletter list that is dead and bounces (default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up after S seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (configuration, spool, accounting file)",
    )
    parser.add_argument(
        "--no-live",
        action="store_true",
        help="plain progress lines instead of the live table (automatic when not a terminal)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Sluice's log on stderr")


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.dead > 100:
        print("sluice demo: --dead is a percentage (0..100)", file=sys.stderr)
        return 2
    options = DemoOptions(
        messages=args.messages,
        speed=args.speed,
        concurrency=max(1, args.concurrency),
        story=Story(args.story),
        time_scale=args.time_scale,
        dead_share=args.dead / 100.0,
        live=console.is_terminal and not args.no_live,
        timeout=args.timeout,
        keep=args.keep,
    )
    logger = logging.getLogger("sluice")
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.ERROR)
    try:
        summary = uvloop.run(run_demo(options, console))
    except ConfigError as exc:
        print(f"sluice demo: the demo configuration does not load:\n{exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sluice demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sluice demo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if summary.ok else 1
