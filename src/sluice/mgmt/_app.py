"""What endpoint modules share: the Endpoint record, the services handlers reach, helpers.

An endpoint module (``_inject.py`` now; status, queues, ``/metrics`` and the monitor later)
exports a tuple of :class:`Endpoint`; :class:`~sluice.mgmt.MgmtServer` registers them and
enforces each one's :class:`~sluice.mgmt.Role` before the handler runs. Handlers find the
daemon's parts through ``request.app[SERVICES]``.

Public names: Endpoint, Handler, Services, SERVICES, peer_ip, json_response.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from sluice.clock import Clock
from sluice.intake.inject import Injector, OnReceived
from sluice.intake.policy import SourcePolicyMap
from sluice.mgmt._access import Role

__all__ = ["SERVICES", "Endpoint", "Handler", "Services", "json_response", "peer_ip"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One route: ``method`` and ``path`` (aiohttp syntax), the least role that may call it
    (ADMIN also requires the token when one is configured), and the handler."""

    method: str
    path: str
    role: Role
    handler: Handler


@dataclass(slots=True, kw_only=True)
class Services:
    """The daemon's parts the handlers use (mutable: reload swaps ``policies``)."""

    injector: Injector
    policies: SourcePolicyMap
    on_received: OnReceived | None
    clock: Clock
    #: Set while ``max-cpu-usage`` refuses injections: (SMTP code, enhanced code, text).
    busy: tuple[int, str, str] | None = None
    #: Makes the Message-IDs this server writes unique across restarts and processes.
    boot: str = field(default_factory=lambda: secrets.token_hex(6))
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_message_id(self) -> str:
        return f"<api.{self.boot}.{next(self._counter)}@{self.injector.hostname}>"


SERVICES = web.AppKey("sluice.mgmt.services", Services)


def peer_ip(request: web.Request) -> str:
    """The address of the TCP peer (never a forwarded-for header)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return ""


def json_response(
    body: Mapping[str, object], *, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(dict(body), status=status, headers=headers)
