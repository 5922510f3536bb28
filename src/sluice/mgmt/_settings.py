"""The management server's settings (filled from the configuration by daemon/mgmt_map.py).

Public names: MgmtSettings, DEFAULT_BIND, DEFAULT_MAX_REQUEST_SIZE. ``MgmtSettings`` raises
``ValueError`` for a port outside 0-65535, an empty bind list or a non-positive size.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.mgmt._access import AccessRule

__all__ = ["DEFAULT_BIND", "DEFAULT_MAX_REQUEST_SIZE", "MgmtSettings"]

#: Where the interface listens unless told otherwise: loopback only (test-plan T22).
DEFAULT_BIND: tuple[str, ...] = ("127.0.0.1",)

#: Largest HTTP request body accepted, in octets. A JSON string escapes each control
#: character of a message into up to six characters, but real messages are mostly text, so
#: a few times Postfix's 10,240,000-octet message_size_limit covers any message the
#: ``max-message-size`` of a source would accept in practice; 413 beyond it.
DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True, kw_only=True)
class MgmtSettings:
    """Everything :class:`~sluice.mgmt.MgmtServer` needs to know from the configuration."""

    #: ``http-mgmt-port``; 0 picks a free port (tests).
    port: int
    #: Addresses to listen on, one socket each.
    bind: tuple[str, ...] = DEFAULT_BIND
    #: ``http-access`` rules in file order (the loopback defaults are added by AccessMap).
    access: tuple[AccessRule, ...] = ()
    #: ``http-mgmt-token-file``: admin requests must present its token as a Bearer token.
    token_file: str | None = None
    #: Names accepted in the Host header besides IP literals and ``localhost`` (lower case):
    #: ``host-name`` and the machine's own name.
    host_names: frozenset[str] = frozenset()
    #: Largest request body in octets (413 beyond it).
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE

    def __post_init__(self) -> None:
        if not 0 <= self.port <= _MAX_PORT:
            raise ValueError(f"port {self.port} is not in 0-{_MAX_PORT}")
        if not self.bind:
            raise ValueError("the management server needs at least one bind address")
        if self.max_request_size <= 0:
            raise ValueError("max_request_size must be positive")
