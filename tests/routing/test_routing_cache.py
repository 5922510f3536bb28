"""DnsCache (pure TTL rules) and CachingResolver (cache + single flight) on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from t27_zones import T27_ZONES

from sluice.clock import FakeClock
from sluice.net.dns import CachingResolver, parse_nameserver
from sluice.routing import (
    AddressAnswer,
    DnsCache,
    DnsFailure,
    FakeName,
    FakeResolver,
    MxAnswer,
    MxRecord,
)


def positive(domain: str = "a.test", ttl: int = 300) -> MxAnswer:
    return MxAnswer(domain=domain, records=(MxRecord(preference=1, exchange="mx.a.test"),), ttl=ttl)


def test_positive_answer_lives_for_its_ttl() -> None:
    cache = DnsCache()
    answer = positive(ttl=300)
    cache.put(answer, now=1000.0)
    assert cache.get_mx("A.test.", 1299.9) is answer
    assert cache.get_mx("a.test", 1300.0) is None
    assert len(cache) == 0  # expired entries are dropped on read


def test_ttl_is_clamped() -> None:
    cache = DnsCache(min_ttl=30, max_ttl=600)
    assert cache.lifetime(positive(ttl=0)) == 30
    assert cache.lifetime(positive(ttl=10**6)) == 600


def test_zero_ttl_is_not_cached_by_default() -> None:
    cache = DnsCache()
    cache.put(positive(ttl=0), now=0)
    assert cache.get_mx("a.test", 0) is None


def test_negative_answers_are_cached_briefly() -> None:
    cache = DnsCache()
    nx = MxAnswer(domain="nx.test", failure=DnsFailure.NXDOMAIN, ttl=3600)
    cache.put(nx, now=0)
    assert cache.lifetime(nx) == 60  # capped short
    assert cache.get_mx("nx.test", 59) is nx
    assert cache.get_mx("nx.test", 60) is None
    no_soa = MxAnswer(domain="nodata.test", failure=DnsFailure.NODATA, ttl=0)
    assert cache.lifetime(no_soa) == 0  # RFC 2308: no SOA, no negative caching


def test_transient_failures_are_cached_for_seconds() -> None:
    cache = DnsCache()
    sf = AddressAnswer(host="h.test", failure=DnsFailure.SERVFAIL)
    cache.put(sf, now=0)
    assert cache.get_addresses("h.test", 4.9) is sf
    assert cache.get_addresses("h.test", 5.0) is None


def test_mx_and_address_entries_do_not_mix() -> None:
    cache = DnsCache()
    cache.put(positive("x.test"), now=0)
    assert cache.get_addresses("x.test", 0) is None
    addr = AddressAnswer(host="x.test", addresses=("127.0.0.1",), ttl=60)
    cache.put(addr, now=0)
    assert cache.get_addresses("x.test", 0) is addr
    assert cache.get_mx("x.test", 0) is not None


def test_eviction_keeps_the_cache_bounded() -> None:
    cache = DnsCache(max_entries=3)
    for i in range(3):
        cache.put(positive(f"d{i}.test", ttl=10 + i), now=0)
    cache.put(positive("new.test"), now=10.5)  # d0 expired: evicted first
    assert cache.get_mx("d0.test", 10.5) is None
    assert cache.get_mx("d1.test", 10.5) is not None
    cache.put(positive("newer.test"), now=10.5)  # nothing expired: the oldest goes
    assert len(cache) == 3
    assert cache.get_mx("d1.test", 10.5) is None
    assert cache.get_mx("newer.test", 10.5) is not None


def test_caching_resolver_serves_repeats_from_cache_until_expiry() -> None:
    clock = FakeClock()
    zones = {**T27_ZONES, "ttl.test": FakeName(mx=((1, "mx1.ok.test"),), ttl=60)}
    inner = FakeResolver(zones)
    resolver = CachingResolver(inner, clock=clock)

    async def go() -> None:
        first = await resolver.mx("ttl.test")
        assert await resolver.mx("TTL.test") is first
        assert inner.queries == [("MX", "ttl.test")]
        clock.advance(61)
        await resolver.mx("ttl.test")
        assert inner.queries == [("MX", "ttl.test")] * 2
        await resolver.mx("servfail.test")
        clock.advance(1)
        await resolver.mx("servfail.test")
        clock.advance(5)
        await resolver.mx("servfail.test")
        assert inner.queries.count(("MX", "servfail.test")) == 2
        await resolver.addresses("mx1.ok.test")
        await resolver.addresses("mx1.ok.test")
        assert inner.queries.count(("A", "mx1.ok.test")) == 1

    asyncio.run(go())


class SlowResolver(FakeResolver):
    """A fake resolver whose answers take a while, to overlap concurrent look-ups."""

    async def mx(self, domain: str) -> MxAnswer:
        await asyncio.sleep(0.01)
        return await super().mx(domain)

    async def addresses(self, host: str) -> AddressAnswer:
        await asyncio.sleep(0.01)
        raise RuntimeError("resolver broke")


def test_concurrent_lookups_share_one_query_and_its_errors() -> None:
    inner = SlowResolver(T27_ZONES)
    resolver = CachingResolver(inner, clock=FakeClock())

    async def go() -> None:
        answers = await asyncio.gather(*(resolver.mx("ok.test") for _ in range(20)))
        assert all(a is answers[0] for a in answers)
        assert inner.queries == [("MX", "ok.test")]
        results = await asyncio.gather(
            *(resolver.addresses("h.test") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)

    asyncio.run(go())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("127.0.0.1#5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["", ":53", "127.0.0.1:0", "127.0.0.1:x"])
def test_parse_nameserver_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="nameserver"):
        parse_nameserver(text)
