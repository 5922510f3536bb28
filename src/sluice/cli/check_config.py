"""``sluice check-config FILE [--json]``: load a config, report every problem or a summary.

Exit status: 0 when the file loads (warnings allowed), 2 when it has errors or cannot be read.
The JSON form is documented in docs/config.md.

Public names: NAME, HELP, add_arguments, run, read_config (also used by ``sluice explain``).
"""

from __future__ import annotations

import argparse
import glob as _glob
import json
import sys
from pathlib import Path

from sluice.config import DEFAULT_VMTA, Config, ConfigError, Diagnostic, load_config
from sluice.config.model import DomainBlock
from sluice.config.values import format_value

__all__ = ["HELP", "NAME", "add_arguments", "read_config", "run"]

NAME = "check-config"
HELP = "check a PowerMTA-style configuration file and summarise what it sets up"

#: Exit status for a configuration that cannot be used (DESIGN §4, errors.ConfigError).
EXIT_CONFIG = 2


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _glob_paths(pattern: str) -> list[str]:
    return sorted(_glob.glob(pattern))


def read_config(path: str) -> Config:
    """Load ``path`` from disk (includes relative to each including file)."""
    return load_config(path, read_text=_read_text, glob=_glob_paths)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="configuration file")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _queue_map_lines(config: Config) -> list[str]:
    """``a, b -> queue t`` lines; ``(every VMTA)`` when all VMTAs agree."""
    per_vmta = config.queue_map()
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for vmta, moved in per_vmta.items():
        by_target: dict[str, list[str]] = {}
        for domain, target in moved.items():
            by_target.setdefault(target, []).append(domain)
        for target, domains in by_target.items():
            groups.setdefault((target, tuple(domains)), []).append(vmta)
    lines = []
    for (target, moved_domains), vmtas in sorted(groups.items()):
        where = "every VMTA" if len(vmtas) == len(per_vmta) else "VMTA " + ", ".join(vmtas)
        lines.append(f"{', '.join(moved_domains)} -> queue {target} ({where})")
    return lines


def _domain_blocks(config: Config) -> list[DomainBlock]:
    return [
        *config.domains,
        *(b for v in config.vmtas.values() for b in v.domains),
        *(b for p in config.pools.values() for b in p.domains),
    ]


def _summary(config: Config) -> dict[str, object]:
    def origin(o: object) -> str:
        return str(o)

    return {
        "file": config.file,
        "ok": True,
        "errors": [],
        "warnings": [d.as_dict() for d in config.warnings],
        "files": list(config.files),
        "listeners": [format_value("listen", lst.listen) for lst in config.listeners],
        "http": {
            "port": config.http.port,
            "access": [format_value("http-access", a) for a in config.http.access],
        },
        "sources": [{"match": s.match_text, "origin": origin(s.origin)} for s in config.sources],
        "vmtas": {
            v.name: {
                "source_hosts": [format_value("source-host", h) for h in v.source_hosts],
                "origin": origin(v.origin),
            }
            for v in config.vmtas.values()
        },
        "pools": {p.name: list(p.members) for p in config.pools.values()},
        "domain_blocks": [
            {"names": list(b.written), "in": b.container, "origin": origin(b.origin)}
            for b in _domain_blocks(config)
        ],
        "queue_map": config.queue_map(),
        "acct_files": [
            {"path": a.path, "command": a.command, "origin": origin(a.origin)}
            for a in config.acct_files
        ],
        "spools": [s.path for s in config.spools],
        "warmup_plans": {
            name: {**config.warmup_plans[name].as_dict(), "vmtas": list(vmtas)}
            for name, vmtas in config.warmup_users().items()
        },
    }


def _print_summary(config: Config) -> None:
    out = [f"{config.file}: OK ({len(config.warnings)} warnings)"]
    listeners = [format_value("listen", lst.listen) for lst in config.listeners]
    out.append("listeners: " + (", ".join(listeners) or "none"))
    http = config.http
    out.append(f"http management: {'port ' + str(http.port) if http.port else 'off'}")
    out.append("sources: " + (", ".join(s.match_text for s in config.sources) or "none"))
    vmtas = []
    for v in config.vmtas.values():
        hosts = ", ".join(format_value("source-host", h) for h in v.source_hosts)
        vmtas.append(f"{v.name} ({hosts or 'no source host'})")
    out.append(f"virtual MTAs: {', '.join(vmtas) or 'none'} (plus {DEFAULT_VMTA})")
    pools = [f"{p.name} = {', '.join(p.members)}" for p in config.pools.values()]
    out.append("pools: " + ("; ".join(pools) or "none"))
    out.append("domain blocks:")
    for block in _domain_blocks(config):
        where = f" in {block.container}" if block.container else ""
        out.append(f"  <domain {' '.join(block.written)}>{where}  ({block.origin})")
    out.append("queue mapping (queue-to):")
    out.extend(f"  {line}" for line in _queue_map_lines(config) or ["none"])
    acct = [a.path or f"|{a.command}" for a in config.acct_files]
    out.append("acct files: " + (", ".join(acct) or "none"))
    out.append("spools: " + (", ".join(s.path for s in config.spools) or "none"))
    out.append("warm-up plans:" + ("" if config.warmup_plans else " none"))
    for name, plan_vmtas in config.warmup_users().items():
        plan = config.warmup_plans[name]
        users = ", ".join(
            f"{v} from {found[1].text}" for v in plan_vmtas if (found := config.warmup_of(v))
        )
        out.append(f"  {name}: {plan.describe()}  ({plan.origin})")
        out.append(f"    used by: {users or 'no virtual MTA'}")
    if config.warnings:
        out.append("warnings:")
        out.extend(f"  {w}" for w in config.warnings)
    print("\n".join(out))


def report_errors(path: str, diagnostics: tuple[Diagnostic, ...], as_json: bool) -> int:
    """Print diagnostics of a failed load; returns the exit status."""
    errors = [d for d in diagnostics if d.severity.value == "error"]
    warnings = [d for d in diagnostics if d.severity.value == "warning"]
    if as_json:
        doc = {
            "file": path,
            "ok": False,
            "errors": [d.as_dict() for d in errors],
            "warnings": [d.as_dict() for d in warnings],
        }
        print(json.dumps(doc, indent=2))
    else:
        for d in diagnostics:
            print(d, file=sys.stderr)
        print(f"{path}: {len(errors)} errors, {len(warnings)} warnings", file=sys.stderr)
    return EXIT_CONFIG


def run(args: argparse.Namespace) -> int:
    path: str = args.file
    try:
        config = read_config(path)
    except ConfigError as exc:
        return report_errors(path, exc.diagnostics, args.json)
    if args.json:
        print(json.dumps(_summary(config), indent=2))
    else:
        _print_summary(config)
    return 0
