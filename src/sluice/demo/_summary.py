"""The end of the demo: what arrived where, from which source IP, and whether it all adds up.

:func:`summarize` reads the final accounting file and the simulators' own counters and checks
the seed's promises:

- every accepted recipient has exactly one final ``d`` or ``b`` record;
- transactional mail left only from ``transactional``'s source IP, the newsletter only from
  the ``marketing`` pool's members and their IPs (127.0.0.2; 127.0.0.3 and 127.0.0.4);
- the receivers counted as many messages as the accounting file says were delivered;
- every bounce earned a DSN that was delivered to the sender;
- the injector got a 250 for every message.

:func:`render_summary` prints it. The checks compare two independent witnesses — Sluice's
accounting file and what the simulated ISPs saw on their sockets.

Public names: AcctRecords, read_acct, ReceiverRow, Check, DemoSummary, summarize,
render_summary. ``read_acct`` raises OSError for an unreadable file.
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from sluice.config import Config
from sluice.demo._campaign import SENDERS, DemoMessage
from sluice.demo._inject import InjectStats
from sluice.sim import ReceiverSpec, Stats

__all__ = [
    "AcctRecords",
    "Check",
    "DemoSummary",
    "ReceiverRow",
    "read_acct",
    "render_summary",
    "summarize",
]

_FINAL = ("d", "b")


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctRecords:
    """An accounting file, parsed."""

    path: str
    header: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def of(self, *types: str) -> list[dict[str, str]]:
        return [r for r in self.rows if r.get("type") in types]

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(r.get("type", "") for r in self.rows))


def read_acct(path: str) -> AcctRecords:
    """Parse ``path`` with the csv module (the header is the first line)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = tuple(dict(r) for r in reader)
        header = tuple(reader.fieldnames or ())
    return AcctRecords(path=path, header=header, rows=rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverRow:
    """One simulated ISP: its domains and the messages it accepted per source IP."""

    name: str
    domains: tuple[str, ...]
    by_ip: Mapping[str, int]
    refusals: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_ip.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    ok: bool
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSummary:
    """The outcome of one demo run."""

    elapsed: float
    completed: bool
    messages: int
    inject: InjectStats
    receivers: tuple[ReceiverRow, ...]
    #: Source IP → its virtual MTA (the seed's ``smtp-source-host`` lines).
    sources: Mapping[str, str]
    acct_path: str
    acct_counts: Mapping[str, int]
    #: Delivered recipients by virtual MTA and source IP, from the accounting file.
    delivered_from: Mapping[tuple[str, str], int]
    checks: tuple[Check, ...]
    workdir: str | None = None

    @property
    def ok(self) -> bool:
        return self.completed and all(c.ok for c in self.checks)

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0


def summarize(
    *,
    elapsed: float,
    completed: bool,
    messages: Sequence[DemoMessage],
    accepted: set[int],
    inject: InjectStats,
    acct: AcctRecords,
    stats: Mapping[str, Stats],
    specs: Sequence[ReceiverSpec],
    config: Config,
    sources: Mapping[str, str],
) -> DemoSummary:
    """Check the run (see the module docstring)."""
    senders = {s for s, _ in SENDERS.values()}
    wanted = {m.rcpt: m for m in messages if m.seq in accepted}
    finals = [r for r in acct.of(*_FINAL) if r.get("orig") != "" or r.get("rcpt") not in senders]
    per_rcpt = collections.Counter(r.get("rcpt", "") for r in finals)
    missing = [a for a in wanted if per_rcpt[a] == 0]
    doubled = [a for a, n in per_rcpt.items() if n > 1]
    strangers = [a for a in per_rcpt if a not in wanted]
    checks: list[Check] = []
    checks.append(
        Check(
            ok=not missing and not doubled and not strangers,
            text=(
                f"every accepted recipient has exactly one final d or b record "
                f"({len(wanted) - len(missing)}/{len(wanted)}"
                + (f"; missing {len(missing)}, e.g. {missing[0]}" if missing else "")
                + (f"; {len(doubled)} twice, e.g. {doubled[0]}" if doubled else "")
                + (f"; {len(strangers)} unexpected" if strangers else "")
                + ")"
            ),
        )
    )

    pools = {name: set(pool.members) for name, pool in config.pools.items()}
    delivered_from: collections.Counter[tuple[str, str]] = collections.Counter()
    wrong: list[str] = []
    for r in acct.of("d"):
        vmta, ip, rcpt = r.get("vmta", ""), r.get("dlvSourceIp", ""), r.get("rcpt", "")
        delivered_from[(vmta, ip)] += 1
        msg = wanted.get(rcpt)
        if msg is None:
            continue
        allowed = pools.get(msg.vmta, {msg.vmta})
        if vmta not in allowed or sources.get(ip) != vmta:
            wrong.append(f"<{rcpt}> ({msg.vmta}) via {vmta or '?'} from {ip or '?'}")
    tx_ips = sorted(ip for ip, v in sources.items() if v == "transactional")
    mk_ips = sorted(ip for ip, v in sources.items() if v in pools.get("marketing", set()))
    checks.append(
        Check(
            ok=not wrong,
            text=(
                f"password resets left only from {', '.join(tx_ips) or '?'} (transactional), "
                f"the newsletter only from {', '.join(mk_ips) or '?'} (marketing pool)"
                + (f"; {len(wrong)} wrong, e.g. {wrong[0]}" if wrong else "")
            ),
        )
    )

    rows = tuple(_receiver_row(spec, stats.get(spec.name)) for spec in specs)
    seen = sum(r.total for r in rows)
    delivered = len(acct.of("d"))
    checks.append(
        Check(
            ok=seen == delivered,
            text=f"the receivers accepted as many messages as were logged delivered "
            f"({seen} seen, {delivered} d records)",
        )
    )

    bounced = sum(1 for r in finals if r.get("type") == "b")
    dsns = sum(1 for r in acct.of("d") if r.get("orig") == "" and r.get("rcpt", "") in senders)
    checks.append(
        Check(
            ok=dsns == bounced,
            text=f"every bounce earned a DSN delivered to its sender ({dsns} DSNs, "
            f"{bounced} bounces)",
        )
    )
    checks.append(
        Check(
            ok=inject.refused == 0 and inject.unknown == 0 and inject.accepted == len(messages),
            text=f"Sluice accepted every injected message ({inject.accepted}/{len(messages)}"
            + (f"; refused {inject.refused}" if inject.refused else "")
            + (f"; no reply after the dot {inject.unknown}" if inject.unknown else "")
            + (f"; first refusal: {inject.refusals[0]}" if inject.refusals else "")
            + ")",
        )
    )
    if not completed:
        checks.append(Check(ok=False, text="the run timed out before everything was final"))
    return DemoSummary(
        elapsed=elapsed,
        completed=completed,
        messages=len(messages),
        inject=inject,
        receivers=rows,
        sources=dict(sources),
        acct_path=acct.path,
        acct_counts=acct.counts(),
        delivered_from=dict(delivered_from),
        checks=tuple(checks),
    )


def _receiver_row(spec: ReceiverSpec, stats: Stats | None) -> ReceiverRow:
    if stats is None:
        return ReceiverRow(name=spec.name, domains=spec.domains, by_ip={}, refusals={})
    by_ip = {ip: s.messages for ip, s in stats.by_ip.items() if s.messages}
    return ReceiverRow(
        name=spec.name,
        domains=spec.domains,
        by_ip=by_ip,
        refusals=dict(stats.total.tags),
    )


def render_summary(summary: DemoSummary, console: Console) -> None:
    """Print the summary: receivers by source IP, accounting counts, checks, verdict."""
    ips = sorted({ip for r in summary.receivers for ip in r.by_ip}, key=_ip_key)
    table = Table(title="Delivered where, from which source IP (the receivers' own counts)")
    table.add_column("receiver", no_wrap=True)
    for ip in ips:
        vmta = summary.sources.get(ip, "DSNs" if ip == "127.0.0.1" else "?")
        table.add_column(f"{ip}\n{vmta}", justify="right", no_wrap=True)
    table.add_column("total", justify="right")
    table.add_column("refused (tag)")
    for row in summary.receivers:
        table.add_row(
            row.name,
            *(str(row.by_ip.get(ip, 0) or "") for ip in ips),
            str(row.total),
            ", ".join(f"{t} {n}" for t, n in sorted(row.refusals.items())),
        )
    console.print(table)
    for row in summary.receivers:
        console.print(
            f"  {row.name} stands in for {', '.join(row.domains)}", markup=False, highlight=False
        )
    counts = summary.acct_counts
    kinds = ", ".join(f"{k} {counts[k]}" for k in ("r", "d", "b", "t") if k in counts)
    console.print(f"Accounting file: {summary.acct_path}", markup=False, highlight=False)
    console.print(f"  records: {kinds or 'none'}", markup=False, highlight=False)
    for check in summary.checks:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} ", end="")
        console.print(check.text, markup=False, highlight=False)
    verdict = "[bold green]demo ok[/bold green]" if summary.ok else "[bold red]demo FAILED[/]"
    console.print(
        f"{verdict}: {summary.messages} messages in {summary.elapsed:.1f}s "
        f"({summary.rate:.0f} msgs/s end to end)"
    )
    if summary.workdir:
        console.print(f"Kept the working directory: {summary.workdir}", markup=False)


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(p) for p in ip.split(".") if p.isdigit())
