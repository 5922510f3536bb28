"""The dnspython-backed ``Resolver`` (edge), a caching front for any resolver, and the DNS loop.

``DnsResolver`` asks the system's nameservers, or the one given by the resolver override
(``nameservers``/``port``, e.g. a test server on 127.0.0.1:5353), and maps every dnspython
outcome to a routing answer value at this boundary:

    answer with records          → records, TTL of the RRset
    NoAnswer (NOERROR, empty)    → NODATA, negative TTL from the SOA (0 without one)
    NXDOMAIN                     → NXDOMAIN, negative TTL from the SOA (0 without one)
    NoNameservers (SERVFAIL,
      REFUSED, all servers bad)  → SERVFAIL
    Timeout / LifetimeTimeout    → TIMEOUT
    any other DNSException,
      OSError                    → SERVFAIL

No dnspython exception leaves this module.

``CachingResolver`` puts a ``routing.cache.DnsCache`` (TTL from an injected Clock) in front of
another resolver and merges concurrent look-ups of one name into one query.

``drive_dns(plan, resolver)`` performs an ``AttemptPlan``'s DNS steps and returns its first
``Connect`` or ``Done`` step.

Public names: DnsResolver, CachingResolver, drive_dns, parse_nameserver (raises ValueError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.rrset

from sluice.clock import Clock
from sluice.routing.answers import (
    AddressAnswer,
    DnsFailure,
    MxAnswer,
    MxRecord,
    Resolver,
    normalize_name,
)
from sluice.routing.attempt import AttemptPlan, Connect, Done, ResolveAddresses, ResolveMx
from sluice.routing.cache import DnsCache

__all__ = ["CachingResolver", "DnsResolver", "drive_dns", "parse_nameserver"]

#: Seconds to wait for one server's reply before trying again (glibc resolv.conf default).
DEFAULT_TIMEOUT = 5.0
#: Seconds one look-up may take in all, retries included (dnspython's default lifetime).
DEFAULT_LIFETIME = 5.0
#: The DNS port (RFC 1035 §4.2).
DNS_PORT = 53


def parse_nameserver(text: str) -> tuple[str, int]:
    """Parse a resolver override: ``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or ``ADDR#PORT``."""
    spec = text.strip()
    if spec.startswith("["):
        addr, _, rest = spec[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif "#" in spec:
        addr, _, port_text = spec.partition("#")
    elif spec.count(":") == 1:
        addr, _, port_text = spec.partition(":")
    else:
        addr, port_text = spec, ""
    if not addr:
        raise ValueError(f"no address in nameserver {text!r}")
    if not port_text:
        return addr, DNS_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in nameserver {text!r}")
    return addr, int(port_text)


def _negative_ttl(response: dns.message.Message | None) -> int:
    # RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its MINIMUM field.
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


_Records = tuple[dns.rrset.RRset | None, int, DnsFailure | None]


class DnsResolver:
    """A ``Resolver`` over dnspython's asyncio resolver."""

    def __init__(
        self,
        *,
        nameservers: Sequence[str] | None = None,
        port: int = DNS_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(nameservers)
            resolver.port = port
        else:
            resolver = dns.asyncresolver.Resolver(configure=True)
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        resolver.cache = None  # answers are cached by CachingResolver, with our TTL rules
        self._resolver = resolver

    async def _query(self, name: str, rdtype: str) -> _Records:
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            return None, _negative_ttl(response), DnsFailure.NXDOMAIN
        except dns.exception.Timeout:
            return None, 0, DnsFailure.TIMEOUT
        except (dns.exception.DNSException, OSError):
            return None, 0, DnsFailure.SERVFAIL
        if answer.rrset is None:
            return None, _negative_ttl(answer.response), DnsFailure.NODATA
        return answer.rrset, int(answer.rrset.ttl), None

    async def mx(self, domain: str) -> MxAnswer:
        rrset, ttl, failure = await self._query(domain, "MX")
        if failure is not None or rrset is None:
            return MxAnswer(domain=domain, ttl=ttl, failure=failure or DnsFailure.NODATA)
        records = tuple(
            MxRecord(
                preference=int(rd.preference),
                exchange=normalize_name(rd.exchange.to_text(omit_final_dot=True)),
            )
            for rd in rrset
        )
        return MxAnswer(domain=domain, records=records, ttl=ttl)

    async def addresses(self, host: str) -> AddressAnswer:
        (v4, ttl4, fail4), (v6, ttl6, fail6) = await asyncio.gather(
            self._query(host, "A"), self._query(host, "AAAA")
        )
        addresses = tuple(rd.address for rd in v4 or ()) + tuple(rd.address for rd in v6 or ())
        if addresses:
            ttls = [t for t, rr in ((ttl4, v4), (ttl6, v6)) if rr is not None]
            return AddressAnswer(host=host, addresses=addresses, ttl=min(ttls))
        # No address: report the most hopeful failure (a transient one means "try later").
        failures = (fail4, fail6)
        for kind in (DnsFailure.TIMEOUT, DnsFailure.SERVFAIL, DnsFailure.NODATA):
            if kind in failures:
                return AddressAnswer(host=host, ttl=min(ttl4, ttl6), failure=kind)
        return AddressAnswer(host=host, ttl=min(ttl4, ttl6), failure=DnsFailure.NXDOMAIN)


_A = TypeVar("_A", MxAnswer, AddressAnswer)


class CachingResolver:
    """A ``Resolver`` that serves from a ``DnsCache`` and asks ``inner`` on a miss.

    Concurrent misses for one name share one query (single flight).
    """

    def __init__(self, inner: Resolver, *, clock: Clock, cache: DnsCache | None = None) -> None:
        self._inner = inner
        self._clock = clock
        self.cache = cache if cache is not None else DnsCache()
        self._inflight: dict[tuple[str, str], asyncio.Future[MxAnswer | AddressAnswer]] = {}

    async def mx(self, domain: str) -> MxAnswer:
        cached = self.cache.get_mx(domain, self._clock.monotonic())
        if cached is not None:
            return cached
        return await self._once(("mx", normalize_name(domain)), MxAnswer, self._inner.mx, domain)

    async def addresses(self, host: str) -> AddressAnswer:
        cached = self.cache.get_addresses(host, self._clock.monotonic())
        if cached is not None:
            return cached
        key = ("addr", normalize_name(host))
        return await self._once(key, AddressAnswer, self._inner.addresses, host)

    async def _once(
        self,
        key: tuple[str, str],
        kind: type[_A],
        lookup: Callable[[str], Awaitable[_A]],
        name: str,
    ) -> _A:
        waiting = self._inflight.get(key)
        if waiting is not None:
            shared = await asyncio.shield(waiting)
            assert isinstance(shared, kind)
            return shared
        future: asyncio.Future[MxAnswer | AddressAnswer] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            answer = await lookup(name)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        else:
            self.cache.put(answer, self._clock.monotonic())
            future.set_result(answer)
            return answer
        finally:
            del self._inflight[key]


async def drive_dns(plan: AttemptPlan, resolver: Resolver) -> Connect | Done:
    """Perform the plan's DNS look-ups until it asks for a connection or is done."""
    while True:
        step = plan.next_step()
        match step:
            case ResolveMx(name=name):
                plan.result(await resolver.mx(name))
            case ResolveAddresses(host=host):
                plan.result(await resolver.addresses(host))
            case Connect() | Done():
                return step
