"""Config model → the management server's settings (``http-mgmt-port``, ``http-access``, token).

Nothing here does I/O: the token file is read by the server when it starts (and on reload).

Bind addresses: the interface listens on loopback only (test-plan T22) unless an
``http-access`` line grants monitor or admin to a network outside loopback; then it listens
on every address of that family (``0.0.0.0`` and/or ``::``) so those clients can reach it,
and the access rules alone decide who is served.

Public names: mgmt_settings, bind_addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from sluice.config import Config
from sluice.daemon.mapping import global_value
from sluice.mgmt import DEFAULT_BIND, AccessRule, MgmtSettings, Role

__all__ = ["bind_addresses", "mgmt_settings"]

_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Network("::1/128")


def bind_addresses(rules: Iterable[AccessRule]) -> tuple[str, ...]:
    """Loopback, widened to a family's wildcard address when a rule opens that family."""
    v4 = v6 = False
    for rule in rules:
        if rule.role is Role.NONE:
            continue
        net = rule.network
        if isinstance(net, ipaddress.IPv4Network):
            v4 = v4 or not net.subnet_of(_LOOPBACK_V4)
        else:
            v6 = v6 or net != _LOOPBACK_V6
    if not (v4 or v6):
        return DEFAULT_BIND
    return ("0.0.0.0" if v4 else DEFAULT_BIND[0], *(("::",) if v6 else ()))


def mgmt_settings(config: Config, *, hostname: str | None = None) -> MgmtSettings | None:
    """The settings of the HTTP interface, or None when ``http-mgmt-port`` is not set.

    ``hostname`` is the machine's name (the daemon's ``host-name`` or FQDN): it is accepted
    in the Host header besides IP literals, ``localhost`` and the configured ``host-name``.
    """
    http = config.http
    if http.port is None:
        return None
    rules = tuple(AccessRule(network=r.network, role=Role.parse(r.level)) for r in http.access)
    candidates = (hostname, global_value(config, "host-name"))
    names = {n.lower().rstrip(".") for n in candidates if isinstance(n, str) and n}
    token_file = global_value(config, "http-mgmt-token-file")
    return MgmtSettings(
        port=http.port,
        bind=bind_addresses(rules),
        access=rules,
        token_file=str(token_file) if token_file else None,
        host_names=frozenset(names),
    )
