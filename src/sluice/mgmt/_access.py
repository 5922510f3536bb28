"""Who may use the management interface: roles by client address, Host/Origin guards, tokens.

Pure decisions (no I/O): the server asks them for every request.

Public names:

- :class:`Role`: none < monitor < admin (PowerMTA's ``http-access`` levels).
- :class:`AccessRule`: one ``http-access CIDR ROLE`` line.
- :class:`AccessMap`: client address → role; the most specific rule wins, and built-in rules
  give this machine's own loopback addresses (127.0.0.1, ::1) the admin role and everyone
  else none.
- :func:`host_allowed`: the DNS-rebinding guard on the ``Host`` header.
- :func:`origin_allowed`: the cross-site guard on the ``Origin`` header.
- :func:`bearer_matches`: constant-time check of ``Authorization: Bearer <token>``.

``AccessRule`` raises ``ValueError`` for a role name it does not know. Nothing else raises.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "LOOPBACK_RULES",
    "AccessMap",
    "AccessRule",
    "Role",
    "bearer_matches",
    "host_allowed",
    "origin_allowed",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Role(enum.IntEnum):
    """What a client may do (powermta.md §9.1, ``http-access ADDR none|monitor|admin``)."""

    #: Refused everything (403), the default for every non-loopback address.
    NONE = 0
    #: Read-only: status pages, queue listings, metrics.
    MONITOR = 1
    #: Everything, including injection and commands (plus the token, when one is set).
    ADMIN = 2

    @classmethod
    def parse(cls, text: str) -> Role:
        """``none``/``monitor``/``admin`` (any case) → Role; ValueError otherwise."""
        try:
            return _ROLE_NAMES[text.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown http-access level {text!r}") from None


_ROLE_NAMES = {"none": Role.NONE, "monitor": Role.MONITOR, "admin": Role.ADMIN}


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRule:
    """``http-access CIDR ROLE``: clients in ``network`` get ``role``."""

    network: IPNetwork
    role: Role


#: The built-in rules under every configuration: 127.0.0.1 and ::1 are admin (T22: closed by
#: default, yet usable from the machine itself). The rest of 127.0.0.0/8 is not included:
#: extra loopback addresses stand for other hosts in tests and for other services on some
#: machines; ``http-access 127.0.0.0/8 admin`` opens them. A configured rule for the same
#: or a narrower network overrides these (PowerMTA's stock file sets 127.0.0.1 to monitor).
LOOPBACK_RULES: tuple[AccessRule, ...] = (
    AccessRule(network=ipaddress.ip_network("127.0.0.1/32"), role=Role.ADMIN),
    AccessRule(network=ipaddress.ip_network("::1/128"), role=Role.ADMIN),
)


class AccessMap:
    """Client address → :class:`Role`; the longest matching prefix wins.

    Configured ``rules`` come after :data:`LOOPBACK_RULES`; of two rules for the same prefix
    length the later one wins, so a configuration line beats the built-in default and a later
    line beats an earlier one. Unmatched addresses (and unparsable ones) get ``Role.NONE``.
    IPv4-mapped IPv6 addresses are looked up as IPv4.
    """

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[AccessRule] = ()) -> None:
        ordered = [*LOOPBACK_RULES, *rules]
        # Stable sort on prefix length, longest first; within one length, later rules first.
        indexed = sorted(
            enumerate(ordered), key=lambda item: (item[1].network.prefixlen, item[0]), reverse=True
        )
        self._rules = tuple(rule for _, rule in indexed)

    def role_of(self, ip: str) -> Role:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return Role.NONE
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for rule in self._rules:
            if rule.network.version == addr.version and addr in rule.network:
                return rule.role
        return Role.NONE


def _split_host(value: str) -> tuple[str, str] | None:
    """``host[:port]`` or ``[v6][:port]`` → (lower-case host without brackets, port text);
    None when the value is not of that shape."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and (rest[0] != ":" or not rest[1:].isdigit()):
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return host.lower(), rest[1:]
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, ""
    elif not port.isdigit() or ":" in host:
        return None
    return host.lower().rstrip("."), port


def _name_allowed(host: str, names: frozenset[str]) -> bool:
    if not host:
        return False
    if host == "localhost" or host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str | None, names: frozenset[str]) -> bool:
    """True when ``Host`` names this server: an IP literal, ``localhost`` or one of ``names``
    (lower case). A browser tricked by DNS rebinding sends the attacker's name instead, so
    such requests are refused (test-plan T23). A missing Host is refused too."""
    if host_header is None:
        return False
    parts = _split_host(host_header)
    return parts is not None and _name_allowed(parts[0], names)


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """True when there is no ``Origin`` (not a browser, or a same-origin GET) or when it is
    the origin of this very server (same host and port as the ``Host`` header)."""
    if origin is None:
        return True
    if host_header is None:
        return False
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # includes "Origin: null" (sandboxed or file pages)
    own = _split_host(host_header)
    if own is None:
        return False
    own_port = own[1] or "80"
    their_port = str(port) if port is not None else ("443" if parts.scheme == "https" else "80")
    return parts.hostname.lower().rstrip(".") == own[0] and their_port == own_port


#: RFC 6750 §2.1: ``Authorization: Bearer <token>`` (the scheme name is case-insensitive).
_BEARER = "bearer "


def bearer_matches(authorization: str | None, token: bytes) -> bool:
    """True when ``authorization`` carries exactly ``token`` (compared in constant time)."""
    if authorization is None or authorization[: len(_BEARER)].lower() != _BEARER:
        return False
    offered = authorization[len(_BEARER) :].strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(offered, token)
