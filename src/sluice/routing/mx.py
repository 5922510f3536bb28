"""MX answer → ordered host list; route specifications; routing failures; the site key.

RFC 5321 §5.1 is the rule book: MX records are tried in preference order, records of equal
preference in random order; a domain without MX but with an address is its own implicit MX;
finding ourselves in the list means discarding every record at our preference or higher.
RFC 7505 adds the null MX (``0 .``): the domain accepts no mail, so we fail without connecting.

Public names:
    Rng                  the injected randomness (``random.Random`` satisfies it)
    HostSpec, parse_host_spec, parse_host_list
                         ``route`` / ``smtp-hosts`` entries; raise RoutingConfigError
    FailureKind, RouteFailure and the ``*_FAILURE`` builders
                         why a route produced no usable connection, with the SMTP status
    MxHost, order_mx, hosts_from_mx
                         MX records → hosts in the order to try them
    site_key             canonical name of an MX host set (ready queue per (source IP, site))
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sluice.routing.answers import ROOT, DnsFailure, MxAnswer, MxRecord, normalize_name
from sluice.routing.errors import RoutingConfigError

__all__ = [
    "FailureKind",
    "HostSpec",
    "MxHost",
    "Rng",
    "RouteFailure",
    "connect_failure",
    "dns_temporary_failure",
    "hosts_from_mx",
    "is_ip_literal",
    "loop_failure",
    "no_mail_host_failure",
    "no_such_domain_failure",
    "null_mx_failure",
    "order_mx",
    "parse_host_list",
    "parse_host_spec",
    "rejected_failure",
    "site_key",
]

#: Highest TCP port number (RFC 793 §3.1: 16-bit port field).
MAX_PORT = 65535


class Rng(Protocol):
    """Randomness injected into pure code; ``random.Random(seed)`` is the usual one."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


# ---------------------------------------------------------------------------------------------
# Route specifications: `route [host]:port`, `route host`, `smtp-hosts a, [b]:2525, 1.2.3.4`
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSpec:
    """One routing target from the configuration.

    ``literal`` targets are connected to directly (an IP address, or a host name whose A/AAAA
    records are used); the others are domains whose MX records are looked up, with the implicit
    MX rule applying. ``port`` None means ``default-smtp-port``.
    """

    name: str
    port: int | None = None
    literal: bool = False

    def __str__(self) -> str:
        text = f"[{self.name}]" if self.literal else self.name
        return text if self.port is None else f"{text}:{self.port}"


def is_ip_literal(text: str) -> bool:
    """True if ``text`` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_-]{1,63})*$")


def _parse_port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_PORT:
        raise RoutingConfigError(f"bad port in route {spec!r}")
    return int(text)


def parse_host_spec(text: str) -> HostSpec:
    """Parse ``[host]:port``, ``[host]``, ``host:port``, ``host``, ``1.2.3.4`` or ``[::1]:25``.

    Brackets mean "this host, no MX lookup" (as in ``route [127.0.0.1]:25``); an IP address is
    always literal. Raises RoutingConfigError on anything else.
    """
    spec = text.strip()
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise RoutingConfigError(f"unclosed bracket in route {text!r}")
        name, rest = spec[1:close], spec[close + 1 :]
        if name.lower().startswith("ipv6:"):  # RFC 5321 §4.1.3 address-literal tag
            name = name[5:]
        port = None
        if rest:
            if not rest.startswith(":"):
                raise RoutingConfigError(f"junk after bracket in route {text!r}")
            port = _parse_port(rest[1:], text)
        literal = True
    elif is_ip_literal(spec):
        name, port, literal = spec, None, True
    else:
        name, sep, port_text = spec.partition(":")
        port = _parse_port(port_text, text) if sep else None
        literal = is_ip_literal(name)
    name = normalize_name(name) if not is_ip_literal(name) else name
    if not is_ip_literal(name) and not _NAME_RE.match(name):
        raise RoutingConfigError(f"bad host name in route {text!r}")
    return HostSpec(name=name, port=port, literal=literal)


def parse_host_list(text: str) -> tuple[HostSpec, ...]:
    """Parse an ``smtp-hosts`` value: entries separated by commas and/or spaces."""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if not items:
        raise RoutingConfigError("smtp-hosts needs at least one host")
    return tuple(parse_host_spec(item) for item in items)


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------


class FailureKind(enum.Enum):
    """Why routing found no host to deliver to (statuses from RFC 3463 and RFC 7505)."""

    #: The domain publishes a null MX: 556 5.1.10 (RFC 7505 §4.2), no connection attempted.
    NULL_MX = "null-mx"
    #: The recipient domain does not exist: 5.1.2 (RFC 3463 "bad destination system address").
    NO_SUCH_DOMAIN = "no-such-domain"
    #: SERVFAIL or timeout: 4.4.3 (RFC 3463 "directory server failure"); never falls back to A.
    DNS_TEMPORARY = "dns-temporary"
    #: MX hosts (or the implicit MX) have no address: 5.4.4 (RFC 3463 "unable to route").
    NO_MAIL_HOST = "no-mail-host"
    #: The route leads back to us: 5.4.6 (RFC 3463 "routing loop detected"; RFC 5321 §5.1).
    MX_LOOP = "mx-loop"
    #: No TCP connection could be made: 4.4.1 (RFC 3463 "no answer from host").
    CONNECT_FAILED = "connect-failed"
    #: The server's greeting (or a later 421) refused the session; status from its reply.
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteFailure:
    """A routing outcome without a connection: the SMTP code and enhanced status to record."""

    kind: FailureKind
    permanent: bool
    code: int
    status: str
    text: str

    @property
    def transient(self) -> bool:
        return not self.permanent

    def diag(self) -> str:
        """The failure as an SMTP reply line, e.g. ``556 5.1.10 ...`` (for dsnDiag)."""
        return f"{self.code} {self.status} {self.text}"


def null_mx_failure(domain: str) -> RouteFailure:
    return RouteFailure(
        kind=FailureKind.NULL_MX,
        permanent=True,
        code=556,
        status="5.1.10",
        text=f"Recipient domain {domain} has a null MX (RFC 7505) and accepts no mail",
    )


def no_such_domain_failure(domain: str) -> RouteFailure:
    return RouteFailure(
        kind=FailureKind.NO_SUCH_DOMAIN,
        permanent=True,
        code=550,
        status="5.1.2",
        text=f"Domain {domain} does not exist (NXDOMAIN)",
    )


def dns_temporary_failure(name: str, what: str, failure: DnsFailure) -> RouteFailure:
    return RouteFailure(
        kind=FailureKind.DNS_TEMPORARY,
        permanent=False,
        code=451,
        status="4.4.3",
        text=f"Temporary DNS failure ({failure.value}) looking up {what} of {name}",
    )


def no_mail_host_failure(name: str, *, permanent: bool) -> RouteFailure:
    return RouteFailure(
        kind=FailureKind.NO_MAIL_HOST,
        permanent=permanent,
        code=550 if permanent else 451,
        status="5.4.4" if permanent else "4.4.4",
        text=f"No address found for mail host {name}",
    )


def loop_failure(name: str) -> RouteFailure:
    return RouteFailure(
        kind=FailureKind.MX_LOOP,
        permanent=True,
        code=550,
        status="5.4.6",
        text=f"Mail for {name} loops back to this server",
    )


def connect_failure(host: str, address: str, port: int, reason: str) -> RouteFailure:
    return RouteFailure(
        kind=FailureKind.CONNECT_FAILED,
        permanent=False,
        code=451,
        status="4.4.1",
        text=f"Cannot connect to {host} ({address}:{port}): {reason}",
    )


_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def rejected_failure(code: int, text: str, *, permanent: bool) -> RouteFailure:
    """A failure that carries the remote's own reply (greeting refusal, 421 mid-session)."""
    match = _ENHANCED_RE.match(text)
    if match:
        status, reason = match.group(0), text[match.end() :].strip()
    else:
        status, reason = f"{code // 100}.0.0", text.strip()
    if permanent and status.startswith("4"):
        status = "5" + status[1:]
    return RouteFailure(
        kind=FailureKind.REJECTED, permanent=permanent, code=code, status=status, text=reason
    )


# ---------------------------------------------------------------------------------------------
# MX ordering
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MxHost:
    """A host to try, with the preference it had in its MX set (0 for implicit MX/literals)."""

    name: str
    preference: int


def _shuffle(items: list[MxHost], rng: Rng) -> None:
    # Fisher–Yates with the injected rng, so a seed reproduces the order.
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]


def order_mx(records: Iterable[MxRecord], rng: Rng) -> tuple[MxHost, ...]:
    """Sort by preference, shuffle within each preference (RFC 5321 §5.1), drop duplicates."""
    best: dict[str, int] = {}
    for record in records:
        name = normalize_name(record.exchange)
        if name == ROOT:
            continue
        if name not in best or record.preference < best[name]:
            best[name] = record.preference
    groups: dict[int, list[MxHost]] = {}
    for name, pref in best.items():
        groups.setdefault(pref, []).append(MxHost(name=name, preference=pref))
    ordered: list[MxHost] = []
    for pref in sorted(groups):
        group = sorted(groups[pref], key=lambda h: h.name)  # a stable start for the shuffle
        _shuffle(group, rng)
        ordered.extend(group)
    return tuple(ordered)


def hosts_from_mx(
    answer: MxAnswer, rng: Rng, *, local_names: frozenset[str] = frozenset()
) -> tuple[MxHost, ...] | RouteFailure | None:
    """Turn the MX answer for a recipient domain into the hosts to try.

    Returns the ordered hosts; ``None`` when the domain has no MX records (NODATA: the caller
    uses the implicit MX, i.e. the domain's own A/AAAA); or a RouteFailure: null MX (5.1.10),
    NXDOMAIN (5.1.2), SERVFAIL/timeout (4.4.3, never an A fallback), or a list that only leads
    back to one of ``local_names`` (5.4.6).
    """
    domain = normalize_name(answer.domain)
    match answer.failure:
        case DnsFailure.NODATA:
            return None
        case DnsFailure.NXDOMAIN:
            return no_such_domain_failure(domain)
        case DnsFailure.SERVFAIL | DnsFailure.TIMEOUT:
            return dns_temporary_failure(domain, "MX", answer.failure)
        case None:
            pass
    if all(record.is_null for record in answer.records):
        return null_mx_failure(domain)
    hosts = order_mx(answer.records, rng)
    ours = [h.preference for h in hosts if h.name in local_names]
    if ours:
        # RFC 5321 §5.1: discard ourselves and every record at our preference or higher.
        hosts = tuple(h for h in hosts if h.preference < min(ours))
        if not hosts:
            return loop_failure(domain)
    return hosts


def site_key(hosts: Sequence[tuple[str, int | None]]) -> str:
    """Canonical name of a host set: sorted, de-duplicated, ``name:port`` where a port is set.

    Two domains served by the same MX hosts share a site, hence a ready queue and its
    connections (KumoMTA's "site name"; PowerMTA's MX rollup).
    """
    names = {name if port is None else f"{name}:{port}" for name, port in hosts}
    return ",".join(sorted(names))
