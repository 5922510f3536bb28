"""``sluice explain FILE QUEUE [--json] [--changed]``: every effective setting of one queue.

QUEUE is ``domain/vmta`` or ``domain`` alone (the default VMTA, ``{default}``). Each setting
is printed with the ``file:line`` that set it, or ``default``. ``queue-to`` is followed, so
``msn.com/transactional`` explains queue ``hotmail.com/transactional`` when the file merges
them. Exit status: 0, 1 for a VMTA the file does not define, 2 when the file has errors.

Public names: NAME, HELP, add_arguments, run.
"""

from __future__ import annotations

import argparse
import json
import sys

from sluice.cli.check_config import read_config, report_errors
from sluice.config import ConfigError, QueuePolicy, UnknownQueueError

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "explain"
HELP = "show every effective setting of a queue (domain/vmta) and where it comes from"

#: Exit status when the queue names a VMTA the file does not define.
EXIT_UNKNOWN_QUEUE = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="configuration file")
    parser.add_argument("queue", metavar="QUEUE", help="domain/vmta, or domain for {default}")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--changed", action="store_true", help="only settings the file sets (no defaults)"
    )


def _print(policy: QueuePolicy, changed_only: bool) -> None:
    out = [f"queue {policy.queue}"]
    if policy.requested != policy.queue:
        out[0] += f"  (asked for {policy.requested}; queue-to {' -> '.join(policy.queue_to_chain)})"
    rows = [
        (name, s.text if s.text else "-", s.origin_text, s.written_as)
        for name, s in sorted(policy.settings.items())
        if not (changed_only and s.origin is None)
    ]
    width = max((len(r[0]) for r in rows), default=10)
    vwidth = min(max((len(r[1]) for r in rows), default=5), 40)
    for name, text, origin, written in rows:
        via = f"  ({written})" if written else ""
        out.append(f"  {name:<{width}}  {text:<{vwidth}}  {origin}{via}")
    out.append("backoff rules (first match wins):")
    if not policy.backoff_rules:
        out.append("  none")
    for rule in policy.backoff_rules:
        out.append(f"  {rule.text}  ({rule.origin})")
    print("\n".join(out))


def run(args: argparse.Namespace) -> int:
    try:
        config = read_config(args.file)
    except ConfigError as exc:
        return report_errors(args.file, exc.diagnostics, args.json)
    try:
        policy = config.policy_for(args.queue)
    except UnknownQueueError as exc:
        message = "; ".join(d.message for d in exc.diagnostics)
        print(f"sluice explain: {args.queue}: {message}", file=sys.stderr)
        return EXIT_UNKNOWN_QUEUE
    if args.json:
        doc = policy.as_dict()
        if args.changed:
            settings = doc["settings"]
            assert isinstance(settings, dict)
            doc["settings"] = {k: v for k, v in settings.items() if v["origin"] != "default"}
        print(json.dumps(doc, indent=2))
    else:
        _print(policy, args.changed)
    return 0
