"""Network value kinds: addresses, CIDRs, listeners, hosts, source hosts, HTTP access rules.

Public names: IPAddress, IPNetwork, MAX_PORT, HostPort, Listen, SourceHost, HttpAccess,
parse_ip, parse_cidr, format_cidr, parse_port, parse_listen, format_listen, parse_host_port,
format_host_port, parse_host_list, parse_source_host, format_source_host, parse_http_access,
HOST_RE. Parsers raise :class:`~sluice.config._values_base.ValueFormError` naming the expected
form.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sluice.config._values_base import exact_words, fail, parse_uint

__all__ = [
    "HOST_RE",
    "MAX_PORT",
    "HostPort",
    "HttpAccess",
    "IPAddress",
    "IPNetwork",
    "Listen",
    "SourceHost",
    "format_cidr",
    "format_host_port",
    "format_listen",
    "format_source_host",
    "parse_cidr",
    "parse_host_list",
    "parse_host_port",
    "parse_http_access",
    "parse_ip",
    "parse_listen",
    "parse_port",
    "parse_source_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Largest TCP port (RFC 793 §3.1: 16-bit port field).
MAX_PORT = 65535
_HTTP_LEVELS = ("none", "monitor", "admin")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPort:
    """A delivery host: ``host``, ``host:port`` or ``[host]:port`` (literal: no MX look-up)."""

    host: str
    port: int | None = None
    literal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Listen:
    """A listening socket; ``address`` None means every local address (``0/0``)."""

    address: IPAddress | None
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceHost:
    """Outbound bind address range (usually one address) and the EHLO name."""

    first: IPAddress
    last: IPAddress
    hostname: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpAccess:
    """``http-access CIDR none|monitor|admin``."""

    network: IPNetwork
    level: str


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise fail("an IP address such as 192.0.2.1 or ::1", text) from None


def parse_cidr(text: str) -> IPNetwork:
    """``0/0``, ``10.1.0/24`` (short form), ``127.0.0.1``, ``::1``, ``2001:db8::/32``."""
    t = text.strip()
    addr, sep, prefix = t.partition("/")
    try:
        if ":" not in addr and addr and re.fullmatch(r"[0-9.]+", addr):
            octets = addr.split(".")
            if len(octets) > 4 or any(not o for o in octets):
                raise ValueError(t)
            addr = ".".join([*octets, *["0"] * (4 - len(octets))])
            if not sep and len(octets) < 4:
                raise ValueError(t)
        if sep and not re.fullmatch(r"[0-9]{1,3}", prefix):
            raise ValueError(t)
        return ipaddress.ip_network(f"{addr}/{prefix}" if sep else addr, strict=False)
    except ValueError:
        raise fail("an address or CIDR such as 0/0, 10.1.0/24, 127.0.0.1 or ::1", text) from None


def format_cidr(value: object) -> str:
    assert isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network)
    if value.prefixlen == value.max_prefixlen:
        return str(value.network_address)
    return str(value)


def parse_port(text: str) -> int:
    port = parse_uint(text.strip(), "a port number 1-65535")
    if not 0 < port <= MAX_PORT:
        raise fail("a port number 1-65535", text)
    return port


def parse_listen(text: str) -> Listen:
    t = text.strip()
    m = re.fullmatch(r"\[([^\]]+)\]:([0-9]+)|(.+):([0-9]+)", t)
    if m is None:
        raise fail("ADDRESS:PORT such as 0/0:25, 127.0.0.1:2525 or [::1]:25", text)
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = parse_port(m.group(2) if m.group(2) is not None else m.group(4))
    if host in ("0/0", "*"):
        return Listen(address=None, port=port)
    return Listen(address=parse_ip(host), port=port)


def format_listen(value: object) -> str:
    assert isinstance(value, Listen)
    if value.address is None:
        return f"0/0:{value.port}"
    if value.address.version == 6:
        return f"[{value.address}]:{value.port}"
    return f"{value.address}:{value.port}"


HOST_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?|\{[A-Za-z0-9_-]+\}")


def parse_host_port(text: str) -> HostPort:
    t = text.strip()
    m = re.fullmatch(r"\[([^\]\s]+)\](?::([0-9]+))?", t)
    if m is not None:
        port = parse_port(m.group(2)) if m.group(2) else None
        return HostPort(host=m.group(1), port=port, literal=True)
    host, sep, port_text = t.rpartition(":") if t.count(":") == 1 else (t, "", "")
    if not HOST_RE.fullmatch(host) and not _is_ip(host):
        raise fail("HOST, HOST:PORT or [HOST]:PORT", text)
    return HostPort(host=host, port=parse_port(port_text) if sep else None)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def format_host_port(value: object) -> str:
    assert isinstance(value, HostPort)
    host = f"[{value.host}]" if value.literal else value.host
    return host if value.port is None else f"{host}:{value.port}"


def parse_host_list(text: str) -> tuple[HostPort, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise fail("one or more hosts separated by commas", text)
    return tuple(parse_host_port(p) for p in parts)


def parse_source_host(text: str) -> SourceHost:
    addr, name = exact_words(text, 2, "ADDRESS HOSTNAME such as 192.0.2.10 mta1.example.com")
    first_text, dash, last_text = addr.partition("-")
    first = parse_ip(first_text)
    last = parse_ip(last_text) if dash else first
    if last.version != first.version or int(last) < int(first):
        raise fail("an address range FIRST-LAST with FIRST <= LAST", addr)
    if not HOST_RE.fullmatch(name):
        raise fail("a host name for EHLO", name)
    return SourceHost(first=first, last=last, hostname=name)


def format_source_host(value: object) -> str:
    assert isinstance(value, SourceHost)
    addr = str(value.first) if value.first == value.last else f"{value.first}-{value.last}"
    return f"{addr} {value.hostname}"


def parse_http_access(text: str) -> HttpAccess:
    cidr, level = exact_words(text, 2, "CIDR none|monitor|admin")
    if level.lower() not in _HTTP_LEVELS:
        raise fail("an access level none, monitor or admin", level)
    return HttpAccess(network=parse_cidr(cidr), level=level.lower())
