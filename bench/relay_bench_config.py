"""Write a Sluice configuration for ../shared/bench/relay-bench's ``command`` adapter.

Reads the routes file relay-bench provides (``domain host port`` per line) and prints a
PowerMTA-style configuration: the listener relay-bench expects, a spool in the run's work
directory (a real disk, durable: every message is fsync'd before its 250), relaying for
127.0.0.1 and one ``<domain>`` block per destination with a static ``route``.

usage: python bench/relay_bench_config.py LISTEN_HOST LISTEN_PORT ROUTES_FILE WORKDIR
       [MAX_SMTP_OUT]
"""

from __future__ import annotations

import sys


def render(host: str, port: str, routes_file: str, workdir: str, max_out: int = 20) -> str:
    lines = [
        f"smtp-listener {host}:{port}",
        "host-name relay.bench.test",
        f"<spool {workdir}/spool>",
        "</spool>",
        "<source 127.0.0.1>",
        "    always-allow-relaying yes",
        "</source>",
        "<domain *>",
        f"    max-smtp-out {max_out}",
        "    connection-idle-timeout 10s",
        "</domain>",
    ]
    with open(routes_file, encoding="utf-8") as fh:
        for raw in fh:
            parts = raw.split()
            if len(parts) != 3:
                continue
            domain, rhost, rport = parts
            lines += [f"<domain {domain}>", f"    route [{rhost}]:{rport}", "</domain>"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    max_out = int(argv[5]) if len(argv) == 6 else 20
    sys.stdout.write(render(argv[1], argv[2], argv[3], argv[4], max_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
