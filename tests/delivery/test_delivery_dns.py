"""T27 and T29 (second half) through a real DNS server on loopback: open_session resolves
with DnsResolver against the test server from tests/routing/dnsserver.py."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from dlv_helpers import kinds, run, transfer
from dlv_receiver import Receiver, Script
from tests.routing.dnsserver import run_dns_server

from sluice.delivery import ConnectFailure, DeliverySettings, Phase, Session, open_session
from sluice.net.dns import DnsResolver
from sluice.routing import DnsFailure, FakeName, RouteSettings
from sluice.sched.outcome import OutcomeKind, Scope
from sluice.smtp import Reply

pytestmark = pytest.mark.interop

MX1, MX2, AONLY = "127.0.0.51", "127.0.0.52", "127.0.0.53"
ZONES = {
    "ok.test": FakeName(mx=((10, "mx1.ok.test"), (20, "mx2.ok.test"))),
    "mx1.ok.test": FakeName(a=(MX1,)),
    "mx2.ok.test": FakeName(a=(MX2,)),
    "nomx.test": FakeName(a=(AONLY,)),
    "nullmx.test": FakeName(mx=((0, "."),)),
    "servfail.test": FakeName(failure=DnsFailure.SERVFAIL),
    "timeout.test": FakeName(failure=DnsFailure.TIMEOUT),
}


def shared_port(hosts: tuple[str, ...]) -> int:
    """A port free on every host right now (all MX hosts listen on ``default-smtp-port``)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no shared free port")


@asynccontextmanager
async def world(mx1: Script) -> AsyncIterator[tuple[list[Receiver], DnsResolver, int]]:
    port = shared_port((MX1, MX2, AONLY))
    with run_dns_server(ZONES) as (dns_host, dns_port):
        resolver = DnsResolver(nameservers=[dns_host], port=dns_port, timeout=0.2, lifetime=0.4)
        async with (
            Receiver(mx1, MX1, port) as a,
            Receiver(Script(), MX2, port) as b,
            Receiver(Script(), AONLY, port) as c,
        ):
            yield [a, b, c], resolver, port


def settings(port: int) -> DeliverySettings:
    return DeliverySettings(
        ehlo_hostname="out.sluice.test",
        source_address="127.0.0.3",
        route=RouteSettings(default_smtp_port=port),
    )


@pytest.mark.parametrize(
    ("domain", "kind", "status", "dns_error"),
    [
        ("nullmx.test", OutcomeKind.PERMANENT, "5.1.10", False),
        ("nx.test", OutcomeKind.PERMANENT, "5.1.2", False),
        ("servfail.test", OutcomeKind.TRANSIENT, "4.4.3", True),
        ("timeout.test", OutcomeKind.TRANSIENT, "4.4.3", True),
    ],
)
def test_t27_dns_failures_connect_nowhere(
    domain: str, kind: OutcomeKind, status: str, dns_error: bool
) -> None:
    async def go() -> None:
        async with world(Script()) as (receivers, resolver, port):
            failed = await open_session(domain, settings(port), resolver, random.Random(1))
            assert isinstance(failed, ConnectFailure)
            o = failed.outcome
            assert (o.kind, o.scope, o.status, o.dns_error) == (kind, Scope.SITE, status, dns_error)
            assert o.phase is Phase.DNS
            assert failed.connect_attempts == 0
            assert all(r.peers == [] for r in receivers)  # zero TCP connections

    run(go())


def test_t27_a_only_domain_is_its_own_mx() -> None:
    async def go() -> None:
        async with world(Script()) as (receivers, resolver, port):
            s = await open_session("nomx.test", settings(port), resolver, random.Random(1))
            assert isinstance(s, Session)
            assert (s.info.remote_host, s.info.remote_address) == ("nomx.test", AONLY)
            (r,) = await s.deliver([transfer(1, ["u@nomx.test"])])
            assert kinds(r) == {0: OutcomeKind.DELIVERED}
            await s.close()
            assert receivers[2].peers[0][0] == "127.0.0.3"
            assert len(receivers[2].messages) == 1

    run(go())


def test_t29_421_greeting_at_the_primary_delivers_through_the_secondary() -> None:
    async def go() -> None:
        busy = Script(greeting=Reply.of(421, "4.3.2", "try later"))
        async with world(busy) as (receivers, resolver, port):
            s = await open_session("ok.test", settings(port), resolver, random.Random(1))
            assert isinstance(s, Session)
            assert s.info.remote_host == "mx2.ok.test"
            assert s.info.mta == f"mx2.ok.test ({MX2})"
            (fallback,) = s.fallbacks
            assert (fallback.host, fallback.address) == ("mx1.ok.test", MX1)
            assert fallback.reason.startswith("421")
            (r,) = await s.deliver([transfer(1, ["u@ok.test"])])
            assert kinds(r) == {0: OutcomeKind.DELIVERED}
            await s.close()
            assert len(receivers[0].peers) == 1
            assert receivers[0].messages == []
            assert len(receivers[1].messages) == 1

    run(go())
