"""A dict-backed ``Resolver`` for tests, and the zone description shared with test DNS servers.

``FakeResolver`` answers from a mapping of names to ``FakeName`` entries, with the same rules
a real server follows: a name that is absent is NXDOMAIN; a present name without records of
the asked type is NODATA; a name marked ``failure=SERVFAIL`` or ``TIMEOUT`` fails every query.
The loopback DNS server in ``tests/routing/dnsserver.py`` serves the same mapping over UDP, so
one table of expectations checks both.

Public names: FakeName, FakeResolver. Nothing here raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sluice.routing.answers import AddressAnswer, DnsFailure, MxAnswer, MxRecord, normalize_name

__all__ = ["FakeName", "FakeResolver"]

#: TTL of fake records unless a name says otherwise (seconds).
DEFAULT_TTL = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeName:
    """The records of one name: MX as ``(preference, exchange)``, A and AAAA as strings."""

    mx: tuple[tuple[int, str], ...] = ()
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    failure: DnsFailure | None = None
    ttl: int = DEFAULT_TTL
    negative_ttl: int = 0


class FakeResolver:
    """Answers ``mx`` and ``addresses`` from ``zones``; logs every query in ``queries``."""

    def __init__(self, zones: Mapping[str, FakeName]) -> None:
        self.zones = {normalize_name(k): v for k, v in zones.items()}
        #: (qtype, name) of every query, in order: ("MX", "a.test"), ("A", "mx.a.test").
        self.queries: list[tuple[str, str]] = []

    async def mx(self, domain: str) -> MxAnswer:
        name = normalize_name(domain)
        self.queries.append(("MX", name))
        entry = self.zones.get(name)
        if entry is None:
            return MxAnswer(domain=domain, failure=DnsFailure.NXDOMAIN)
        if entry.failure is not None:
            return MxAnswer(domain=domain, failure=entry.failure)
        if not entry.mx:
            return MxAnswer(domain=domain, failure=DnsFailure.NODATA, ttl=entry.negative_ttl)
        records = tuple(MxRecord(preference=p, exchange=normalize_name(x)) for p, x in entry.mx)
        return MxAnswer(domain=domain, records=records, ttl=entry.ttl)

    async def addresses(self, host: str) -> AddressAnswer:
        name = normalize_name(host)
        self.queries.append(("A", name))
        entry = self.zones.get(name)
        if entry is None:
            return AddressAnswer(host=host, failure=DnsFailure.NXDOMAIN)
        if entry.failure is not None:
            return AddressAnswer(host=host, failure=entry.failure)
        if not entry.a and not entry.aaaa:
            return AddressAnswer(host=host, failure=DnsFailure.NODATA, ttl=entry.negative_ttl)
        return AddressAnswer(host=host, addresses=entry.a + entry.aaaa, ttl=entry.ttl)
