"""``python -m sluice.sim``: run simulators from the command line; print their stats on exit.

::

    python -m sluice.sim --profile microsoft --listen 127.0.0.20:2526 \\
        --param hourly_budget=100 --param budget_window=60 --sample
    python -m sluice.sim --listen microsoft@127.0.0.20:2526 --listen gmail@127.0.0.21:2526 \\
        --listen 127.0.0.22:2526 --time-scale 0.01 --duration 30 --json

Each ``--listen`` is ``[PROFILE@]HOST:PORT`` (PROFILE defaults to ``--profile``, itself
``plain``). ``--param NAME=VALUE`` sets a field of the profiles' parameter classes
(``MicrosoftParams``, ``GmailParams``, ``YahooParams``) on every receiver whose profile has
it. Stops on SIGINT/SIGTERM or after ``--duration`` seconds, then prints per-source stats
(text, or JSON with ``--json``). Exit status 2 on bad arguments, 1 when an address cannot
be bound.

Public names: main, parse_listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from sluice.sim._cluster import ReceiverSpec, SimCluster, new_event_loop
from sluice.sim._faults import Faults
from sluice.sim._profiles import (
    PROFILE_NAMES,
    BudgetModel,
    GmailParams,
    MicrosoftParams,
    Stage,
    YahooParams,
    make_profile,
)
from sluice.sim._server import DEFAULT_SAMPLE_INTERVAL
from sluice.sim._stats import SourceStats, Stats

__all__ = ["main", "parse_listen"]

_PARAM_CLASSES = {"microsoft": MicrosoftParams, "gmail": GmailParams, "yahoo": YahooParams}


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "off", "") else int(text)


#: Field type (as written in the dataclass) → parser of a command-line value.
_PARSERS: dict[str, Any] = {
    "int": int,
    "float": float,
    "int | None": _optional_int,
    "BudgetModel": BudgetModel,
    "Stage": Stage,
}


def parse_listen(text: str, default_profile: str) -> tuple[str, str, int]:
    """``[PROFILE@]HOST:PORT`` → (profile, host, port); raises ValueError."""
    profile, at, rest = text.rpartition("@")
    if not at:
        profile, rest = default_profile, text
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(f"--listen wants [PROFILE@]HOST:PORT, not {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILE_NAMES)}")
    return profile, host, int(port)


def _parse_params(items: Sequence[str], profiles: set[str]) -> dict[str, dict[str, Any]]:
    """``NAME=VALUE`` items → parameters per profile name; raises ValueError."""
    out: dict[str, dict[str, Any]] = {p: {} for p in profiles}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--param wants NAME=VALUE, not {item!r}")
        used = False
        for profile in profiles:
            cls = _PARAM_CLASSES.get(profile)
            if cls is None:
                continue
            for f in fields(cls):
                if f.name == name:
                    out[profile][name] = _PARSERS[str(f.type)](value)
                    used = True
        if not used:
            raise ValueError(f"no listed profile has a parameter {name!r}")
    return out


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sluice.sim", description="Run Sluice's ISP simulators on loopback."
    )
    ap.add_argument("--profile", default="plain", choices=PROFILE_NAMES)
    ap.add_argument("--listen", action="append", required=True, metavar="[PROFILE@]HOST:PORT")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--time-scale", type=float, default=1.0, help="multiply every duration")
    ap.add_argument("--hangup-every", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before the final reply")
    ap.add_argument("--greet-421", action="store_true")
    ap.add_argument("--tarpit", action="store_true")
    ap.add_argument("--no-instructions", action="store_true", help="ignore tNNN-/dNNN- parts")
    ap.add_argument("--sample", action="store_true", help="sample concurrency every 100 ms")
    ap.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    ap.add_argument("--json", action="store_true", help="print the stats as JSON")
    return ap


def _source_dict(s: SourceStats) -> dict[str, Any]:
    return {
        "connections": s.connections,
        "refused_connections": s.refused_connections,
        "peak": s.peak,
        "messages": s.messages,
        "recipients": s.recipients,
        "message_bytes": s.message_bytes,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "hangups": s.hangups,
        "replies": {str(k): v for k, v in sorted(s.replies.items())},
        "tags": dict(s.tags),
    }


def _stats_dict(st: Stats) -> dict[str, Any]:
    return {
        "name": st.name,
        "profile": st.profile,
        "address": f"{st.host}:{st.port}",
        "total": _source_dict(st.total),
        "by_ip": {ip: _source_dict(s) for ip, s in sorted(st.by_ip.items())},
        "peak_sampled": st.peak_sampled() if st.samples else None,
    }


def _format(st: Stats) -> str:
    lines = [f"{st.name} ({st.profile}) on {st.host}:{st.port}"]
    head = f"  {'source':<16}{'conns':>7}{'peak':>6}{'msgs':>8}{'rcpts':>8}{'refused':>8}  tags"
    lines.append(head)
    rows = [*sorted(st.by_ip.items()), ("total", st.total)]
    for ip, s in rows:
        tags = " ".join(f"{k}={v}" for k, v in sorted(s.tags.items())) or "-"
        lines.append(
            f"  {ip:<16}{s.connections:>7}{s.peak:>6}{s.messages:>8}{s.recipients:>8}"
            f"{s.refused_connections:>8}  {tags}"
        )
    return "\n".join(lines)


async def _run(args: argparse.Namespace, specs: list[ReceiverSpec]) -> dict[str, Stats]:
    cluster = SimCluster(specs, sample_interval=DEFAULT_SAMPLE_INTERVAL if args.sample else None)
    await cluster.start()
    for server in cluster:
        print(f"listening: {server.name} ({server.profile.name}) on {server.host}:{server.port}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.duration is not None:
            try:
                await asyncio.wait_for(stop.wait(), args.duration)
            except TimeoutError:
                pass
        else:
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    stats = cluster.stats()
    await cluster.stop()
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    ap = _build_parser()
    args = ap.parse_args(argv)
    faults = Faults(
        recipient_instructions=not args.no_instructions,
        hangup_every=args.hangup_every,
        final_reply_delay=args.delay,
        greet_421=args.greet_421,
        tarpit=args.tarpit,
    )
    try:
        listens = [parse_listen(x, args.profile) for x in args.listen]
        params = _parse_params(args.param, {p for p, _, _ in listens})
        specs = [
            ReceiverSpec(
                name=f"{profile}@{host}:{port}" if port else f"{profile}@{host}",
                host=host,
                port=port,
                profile=make_profile(profile, time_scale=args.time_scale, **params[profile]),
                faults=faults,
            )
            for profile, host, port in listens
        ]
    except ValueError as exc:
        ap.error(str(exc))
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            stats = runner.run(_run(args, specs))
    except OSError as exc:
        print(f"sluice.sim: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([_stats_dict(s) for s in stats.values()], indent=2))
    else:
        print("\n\n".join(_format(s) for s in stats.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
