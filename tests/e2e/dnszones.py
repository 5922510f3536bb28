"""The test-plan §6.1 DNS zones for end-to-end runs, served by tests/routing/dnsserver.py.

MX records cannot carry a port, so every receiver listens on one shared port P on its own
loopback address (see ``peers.free_port_on_all``) and Sluice is configured with
``default-smtp-port P``.

Public names:
    RECEIVER_ADDRS          domain label -> loopback address of its receiver (ok → 127.0.0.2 …)
    ALL_RECEIVER_ADDRS      every address a receiver (or a dead host) uses; probe P on these
    e2e_zones(addrs=None, *, loop_addr, nomx_addr) -> dict[str, FakeName]
    run_e2e_dns(zones=None) -> context manager yielding a running DnsTestServer
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from tests.routing.dnsserver import DnsTestServer

from sluice.routing import DnsFailure, FakeName

__all__ = ["ALL_RECEIVER_ADDRS", "RECEIVER_ADDRS", "DnsTestServer", "e2e_zones", "run_e2e_dns"]

#: test-plan §6.1: which receiver stands behind each test domain.
RECEIVER_ADDRS: dict[str, str] = {
    "ok": "127.0.0.2",  # the real Postfix receiver
    "sink": "127.0.0.3",  # smtp-sink -D (dump)
    "drop": "127.0.0.4",  # smtp-sink -q . (hang up after the dot)
    "slow": "127.0.0.5",  # smtp-sink -W .:N (reply after the data-done timeout)
    "r421": "127.0.0.6",  # smtp-sink -Q CONNECT
    "rej": "127.0.0.7",  # smtp-sink -f RCPT
    "tarpit": "127.0.0.8",  # accepts, never greets (peers.Tarpit)
    "dead": "127.0.0.9",  # nothing listening: connection refused
    "ext": "127.0.0.10",  # relay target only: anything arriving here fails the relay tests
}
ALL_RECEIVER_ADDRS: tuple[str, ...] = tuple(RECEIVER_ADDRS.values())


def e2e_zones(
    addrs: Mapping[str, str] | None = None,
    *,
    loop_addr: str = "127.0.0.1",
    nomx_addr: str = "127.0.0.2",
) -> dict[str, FakeName]:
    """The zones: ``X.test`` MX 10 ``mx.X.test`` A ``addrs[X]`` for each receiver label, plus
    servfail.test, timeout.test, nullmx.test (``MX 0 .``), nomx.test (A only, at
    ``nomx_addr``), loop.test (MX at ``loop_addr``, i.e. Sluice itself); nx.test is absent.
    """
    table = dict(RECEIVER_ADDRS if addrs is None else addrs)
    zones: dict[str, FakeName] = {}
    for label, addr in table.items():
        zones[f"{label}.test"] = FakeName(mx=((10, f"mx.{label}.test"),))
        zones[f"mx.{label}.test"] = FakeName(a=(addr,))
    zones.update(
        {
            "servfail.test": FakeName(failure=DnsFailure.SERVFAIL),
            "timeout.test": FakeName(failure=DnsFailure.TIMEOUT),
            "nullmx.test": FakeName(mx=((0, "."),)),
            "nomx.test": FakeName(a=(nomx_addr,), negative_ttl=30),
            "loop.test": FakeName(mx=((10, "mx.loop.test"),)),
            "mx.loop.test": FakeName(a=(loop_addr,)),
            # nx.test is absent on purpose: NXDOMAIN.
        }
    )
    return zones


@contextlib.contextmanager
def run_e2e_dns(zones: Mapping[str, FakeName] | None = None) -> Iterator[DnsTestServer]:
    """A DnsTestServer on 127.0.0.1:<free UDP port> serving ``zones`` (default: e2e_zones())."""
    with DnsTestServer(e2e_zones() if zones is None else zones) as server:
        yield server
