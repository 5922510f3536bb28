"""Write PowerMTA-style Sluice configuration files for end-to-end tests.

Public names:
    write_sluice_config(tmpdir, *, listener, dns_server, smtp_port, spool=None, acct_file=None,
        acct_records="d,b,t,tq,r", vmtas=None, domains=None, sources=None, extra=(),
        name="sluice.conf") -> Path
    Directives   the value type of ``domains``/``vmtas``/``sources`` blocks
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["Directives", "write_sluice_config"]

#: ``{"max-smtp-out": 5, "retry-after": ["1m", "5m"]}``: a str or int is one line, a list
#: repeats the directive once per item.
Directives = Mapping[str, str | int | Sequence[str]]


def _lines(directives: Directives, indent: str = "    ") -> list[str]:
    out: list[str] = []
    for key, value in directives.items():
        values = [value] if isinstance(value, str | int) else list(value)
        out.extend(f"{indent}{key} {v}" for v in values)
    return out


def _hostport(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def write_sluice_config(
    tmpdir: Path,
    *,
    listener: tuple[str, int],
    dns_server: tuple[str, int],
    smtp_port: int,
    spool: Path | None = None,
    acct_file: Path | None = None,
    acct_records: str = "d,b,t,tq,r",
    vmtas: Mapping[str, Sequence[tuple[str, str]] | Directives] | None = None,
    domains: Mapping[str, Directives] | None = None,
    sources: Mapping[str, Directives] | None = None,
    extra: str | Sequence[str] = (),
    name: str = "sluice.conf",
) -> Path:
    """Write ``tmpdir/name`` and return its path.

    - ``listener``: ``smtp-listener`` address; ``dns_server``: the ``dns-server`` extension;
      ``smtp_port``: ``default-smtp-port`` (global and in ``<domain *>``).
    - ``spool`` (default ``tmpdir/spool``) becomes ``<spool DIR>``; ``acct_file`` (default
      ``tmpdir/acct.csv``) an ``<acct-file>`` with ``records acct_records``.
    - ``vmtas``: name → list of (source IP, EHLO name) for ``smtp-source-host``, or a mapping
      of directives for the block.
    - ``domains``: domain (or ``*``) → directives; ``<domain *>`` always gets the port.
    - ``sources``: address/CIDR → directives; default: ``127.0.0.1`` may relay.
    - ``extra``: raw lines appended at the end (text or a list of lines).
    """
    tmpdir.mkdir(parents=True, exist_ok=True)
    spool_dir = spool if spool is not None else tmpdir / "spool"
    acct = acct_file if acct_file is not None else tmpdir / "acct.csv"
    lines = [
        "# written by tests/e2e/sluice_config.py",
        f"smtp-listener {_hostport(listener)}",
        f"dns-server {_hostport(dns_server)}",
        f"default-smtp-port {smtp_port}",
        "",
        f"<spool {spool_dir}>",
        "</spool>",
        "",
    ]
    for addr, directives in (sources or {"127.0.0.1": {"always-allow-relaying": "yes"}}).items():
        lines += [f"<source {addr}>", *_lines(directives), "</source>", ""]
    lines += [f"<acct-file {acct}>", f"    records {acct_records}", "</acct-file>", ""]
    for vname, spec in (vmtas or {}).items():
        lines.append(f"<virtual-mta {vname}>")
        if isinstance(spec, Mapping):
            lines += _lines(spec)
        else:
            lines += [f"    smtp-source-host {ip} {host}" for ip, host in spec]
        lines += ["</virtual-mta>", ""]
    blocks = dict(domains or {})
    star = dict(blocks.pop("*", {}))
    star.setdefault("default-smtp-port", str(smtp_port))
    lines += ["<domain *>", *_lines(star), "</domain>", ""]
    for dom, directives in blocks.items():
        lines += [f"<domain {dom}>", *_lines(directives), "</domain>", ""]
    lines += [extra] if isinstance(extra, str) else list(extra)
    path = tmpdir / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
