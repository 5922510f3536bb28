"""net/dns.py against real DNS servers on loopback: dnsmasq, and our dnspython test server.

The same expectations run against ``FakeResolver`` too, so the fake cannot drift from what a
real server makes ``DnsResolver`` report (a Resolver conformance table, style rule 8e).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator

import pytest
from dnsserver import DNSMASQ, DnsTestServer, run_dns_server, run_dnsmasq
from t27_zones import OUR_LISTENER, T27_ZONES

from sluice.net.dns import DnsResolver, drive_dns
from sluice.routing import (
    AddressAnswer,
    AttemptPlan,
    Connect,
    DnsFailure,
    Done,
    FakeName,
    FakeResolver,
    MxAnswer,
    MxRecord,
    Resolver,
    RouteSettings,
)

pytestmark = pytest.mark.interop

#: Per-try and total time limits for the timeout case: short, the test server never answers.
FAST = {"timeout": 0.2, "lifetime": 0.4}

# (kind, name) → expected (records-or-addresses, failure)
CONFORMANCE: list[tuple[str, str, tuple[object, ...], DnsFailure | None]] = [
    (
        "mx",
        "ok.test",
        (
            MxRecord(preference=10, exchange="mx1.ok.test"),
            MxRecord(preference=20, exchange="mx2.ok.test"),
        ),
        None,
    ),
    ("mx", "nullmx.test", (MxRecord(preference=0, exchange="."),), None),
    ("mx", "nomx.test", (), DnsFailure.NODATA),
    ("mx", "nx.test", (), DnsFailure.NXDOMAIN),
    ("mx", "servfail.test", (), DnsFailure.SERVFAIL),
    ("mx", "timeout.test", (), DnsFailure.TIMEOUT),
    ("addr", "mx1.ok.test", ("127.0.0.2",), None),
    ("addr", "mx.v6.test", ("127.0.0.20", "::1"), None),
    ("addr", "nomx.test", ("127.0.0.4",), None),
    ("addr", "ok.test", (), DnsFailure.NODATA),
    ("addr", "nx.test", (), DnsFailure.NXDOMAIN),
    ("addr", "servfail.test", (), DnsFailure.SERVFAIL),
    ("addr", "timeout.test", (), DnsFailure.TIMEOUT),
]


async def _ask(resolver: Resolver, kind: str, name: str) -> MxAnswer | AddressAnswer:
    return await (resolver.mx(name) if kind == "mx" else resolver.addresses(name))


def _check(answer: MxAnswer | AddressAnswer, expected: tuple[object, ...], failure: object) -> None:
    got = answer.records if isinstance(answer, MxAnswer) else answer.addresses
    assert (tuple(sorted(got, key=str)), answer.failure) == (
        tuple(sorted(expected, key=str)),
        failure,
    )


@pytest.fixture(scope="module")
def test_server() -> Iterator[DnsTestServer]:
    with DnsTestServer(T27_ZONES) as server:
        yield server


@pytest.mark.parametrize(("kind", "name", "expected", "failure"), CONFORMANCE)
def test_dns_resolver_against_the_test_server(
    test_server: DnsTestServer,
    kind: str,
    name: str,
    expected: tuple[object, ...],
    failure: DnsFailure | None,
) -> None:
    resolver = DnsResolver(nameservers=[test_server.host], port=test_server.port, **FAST)
    _check(asyncio.run(_ask(resolver, kind, name)), expected, failure)


@pytest.mark.parametrize(("kind", "name", "expected", "failure"), CONFORMANCE)
def test_fake_resolver_agrees(
    kind: str, name: str, expected: tuple[object, ...], failure: DnsFailure | None
) -> None:
    _check(asyncio.run(_ask(FakeResolver(T27_ZONES), kind, name)), expected, failure)


def test_ttls_and_negative_ttl_from_the_soa() -> None:
    zones = {
        "t.test": FakeName(mx=((1, "mx.t.test"),), ttl=123, negative_ttl=45),
        "mx.t.test": FakeName(a=("127.0.0.2",), ttl=77),
    }
    with run_dns_server(zones) as (host, port):
        resolver = DnsResolver(nameservers=[host], port=port, **FAST)

        async def go() -> tuple[MxAnswer, AddressAnswer, AddressAnswer]:
            return (
                await resolver.mx("t.test"),
                await resolver.addresses("mx.t.test"),
                await resolver.addresses("t.test"),
            )

        mx, addr, nodata = asyncio.run(go())
    assert mx.ttl == 123
    assert addr.ttl == 77
    assert nodata.failure is DnsFailure.NODATA
    assert nodata.ttl == 45


def test_timeout_is_reported_within_the_lifetime() -> None:
    with run_dns_server(T27_ZONES) as (host, port):
        resolver = DnsResolver(nameservers=[host], port=port, timeout=0.1, lifetime=0.3)
        started = time.monotonic()
        answer = asyncio.run(resolver.mx("timeout.test"))
    assert answer.failure is DnsFailure.TIMEOUT
    assert time.monotonic() - started < 5  # bounded, not a speed claim


def test_unreachable_nameserver_is_a_transient_failure() -> None:
    with run_dns_server({}) as (host, port):
        pass  # the port is closed again: queries get ICMP port unreachable or silence
    answer = asyncio.run(DnsResolver(nameservers=[host], port=port, **FAST).mx("ok.test"))
    assert answer.failure is not None
    assert answer.failure.transient


def test_zones_can_change_while_the_server_runs() -> None:
    zones = {"later.test": FakeName(failure=DnsFailure.SERVFAIL)}
    with DnsTestServer(zones) as server:
        resolver = DnsResolver(nameservers=[server.host], port=server.port, **FAST)
        assert asyncio.run(resolver.mx("later.test")).failure is DnsFailure.SERVFAIL
        server.zones["later.test"] = FakeName(mx=((5, "mx.later.test"),))
        answer = asyncio.run(resolver.mx("later.test"))
        assert answer.records == (MxRecord(preference=5, exchange="mx.later.test"),)
        assert server.queries == [("MX", "later.test")] * 2


def test_whole_plan_over_real_dns_for_each_t27_case(test_server: DnsTestServer) -> None:
    resolver = DnsResolver(nameservers=[test_server.host], port=test_server.port, **FAST)
    settings = RouteSettings(local_endpoints=frozenset({OUR_LISTENER}))

    def outcome(domain: str) -> str:
        plan = AttemptPlan(domain, settings, random.Random(0))
        step = asyncio.run(drive_dns(plan, resolver))
        if isinstance(step, Connect):
            return f"connect {step.address}"
        assert isinstance(step, Done)
        assert step.failure is not None
        return step.failure.status

    assert outcome("ok.test") == "connect 127.0.0.2"
    assert outcome("nomx.test") == "connect 127.0.0.4"
    assert outcome("nx.test") == "5.1.2"
    assert outcome("nullmx.test") == "5.1.10"
    assert outcome("servfail.test") == "4.4.3"
    assert outcome("timeout.test") == "4.4.3"
    assert outcome("loop.test") == "5.4.6"


@pytest.mark.skipif(not os.access(DNSMASQ, os.X_OK), reason="dnsmasq (dnsmasq-base) not installed")
def test_dns_resolver_against_dnsmasq() -> None:
    options = [
        "--mx-host=ok.test,mx.ok.test,10",
        "--host-record=mx.ok.test,127.0.0.2",
        "--host-record=noMX.test,127.0.0.3",
        "--mx-host=nullmx.test,.,0",
        "--local-ttl=60",
    ]
    with run_dnsmasq(options) as (host, port):
        resolver = DnsResolver(nameservers=[host], port=port, timeout=1.0, lifetime=2.0)

        async def go() -> list[MxAnswer | AddressAnswer]:
            return [
                await resolver.mx("ok.test"),
                await resolver.addresses("mx.ok.test"),
                await resolver.mx("nomx.test"),
                await resolver.addresses("NOMX.test"),
                await resolver.mx("nx.test"),
                await resolver.mx("nullmx.test"),
            ]

        ok, mx_addr, nomx, nomx_addr, nx, null = asyncio.run(go())
        plan = AttemptPlan("nomx.test", RouteSettings(default_smtp_port=2525), random.Random(0))
        step = asyncio.run(drive_dns(plan, resolver))
    assert ok.records == (MxRecord(preference=10, exchange="mx.ok.test"),)
    assert ok.ttl == 60
    assert mx_addr.addresses == ("127.0.0.2",)
    assert nomx.failure is DnsFailure.NODATA
    assert nomx_addr.addresses == ("127.0.0.3",)
    assert nx.failure is DnsFailure.NXDOMAIN
    assert null.records == (MxRecord(preference=0, exchange="."),)
    assert step == Connect(host="nomx.test", address="127.0.0.3", port=2525)
