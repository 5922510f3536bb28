"""DNS answers as plain values, and the ``Resolver`` protocol that produces them.

Routing never sees a dnspython object or exception: the edge (``sluice.net.dns``) turns every
reply into one of these values, failures included, so the plan in ``attempt.py`` can decide on
data alone (RFC 5321 §5.1; test-plan.md §4 "DNS failures").

Public names: DnsFailure, MxRecord, MxAnswer, AddressAnswer, Resolver, normalize_name.
Nothing here raises; a resolver reports failures in its answers instead of raising.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AddressAnswer",
    "DnsFailure",
    "MxAnswer",
    "MxRecord",
    "Resolver",
    "normalize_name",
]

#: The exchange of a null MX record (RFC 7505 §3): the root name.
ROOT = "."


class DnsFailure(enum.Enum):
    """Why a lookup produced no records (RFC 1035 §4.1.1 RCODEs, RFC 2308 NODATA)."""

    #: The name does not exist (RCODE 3); permanent for the recipient domain.
    NXDOMAIN = "nxdomain"
    #: The name exists but has no record of the asked type (RFC 2308 §2.2).
    NODATA = "nodata"
    #: The server failed or refused (RCODE 2, 5, or no server usable); transient.
    SERVFAIL = "servfail"
    #: No answer in time; transient.
    TIMEOUT = "timeout"

    @property
    def transient(self) -> bool:
        """True for failures that may go away by themselves (retry later)."""
        return self in (DnsFailure.SERVFAIL, DnsFailure.TIMEOUT)


def normalize_name(name: str) -> str:
    """Lower-case a DNS name and drop its trailing dot; the root name stays ``"."``."""
    lowered = name.strip().lower()
    if lowered in ("", "."):
        return ROOT
    return lowered.rstrip(".")


@dataclass(frozen=True, slots=True, kw_only=True)
class MxRecord:
    """One MX resource record (RFC 1035 §3.3.9): lower preference is tried first."""

    preference: int
    exchange: str

    @property
    def is_null(self) -> bool:
        """True for the root exchange of a null MX (RFC 7505)."""
        return normalize_name(self.exchange) == ROOT


@dataclass(frozen=True, slots=True, kw_only=True)
class MxAnswer:
    """The MX answer for ``domain``: records, or a failure; ``ttl`` in seconds.

    For a negative answer ``ttl`` is the negative-caching time from the SOA (RFC 2308 §5), or
    0 when the server sent none.
    """

    domain: str
    records: tuple[MxRecord, ...] = ()
    ttl: int = 0
    failure: DnsFailure | None = None

    def __post_init__(self) -> None:
        if self.failure is None and not self.records:
            raise ValueError("an MX answer without records must name its failure")
        if self.failure is not None and self.records:
            raise ValueError("a failed MX answer carries no records")


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressAnswer:
    """The A and AAAA addresses of ``host`` (IPv4 first), or a failure; ``ttl`` in seconds."""

    host: str
    addresses: tuple[str, ...] = ()
    ttl: int = 0
    failure: DnsFailure | None = None

    def __post_init__(self) -> None:
        if self.failure is None and not self.addresses:
            raise ValueError("an address answer without addresses must name its failure")
        if self.failure is not None and self.addresses:
            raise ValueError("a failed address answer carries no addresses")


class Resolver(Protocol):
    """What routing needs from DNS. Implementations report failures in the answer, never raise.

    ``sluice.net.dns.DnsResolver`` is the real one; ``sluice.routing.fake.FakeResolver`` answers
    from a dict for tests.
    """

    async def mx(self, domain: str) -> MxAnswer:
        """The MX records of ``domain``."""
        ...

    async def addresses(self, host: str) -> AddressAnswer:
        """The A and AAAA records of ``host``."""
        ...
