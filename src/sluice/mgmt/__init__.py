"""sluice.mgmt: the HTTP management interface (injection now; status, metrics, monitor later).

See docs/http-api.md. The daemon builds the settings with
:func:`sluice.daemon.mgmt_map.mgmt_settings` and runs::

    server = MgmtServer(settings, injector=injector, policies=policies,
                        on_received=daemon_hand_off, clock=clock)
    bound = await server.start()     # [(host, port), ...]
    ...
    await server.stop()              # before the spool closes

Public names: MgmtServer (server); MgmtSettings, DEFAULT_BIND, DEFAULT_MAX_REQUEST_SIZE
(settings); Role, AccessRule, AccessMap, host_allowed, origin_allowed, bearer_matches
(access); Endpoint, Handler, Services, SERVICES (for endpoint modules); ApiError (errors);
InjectRequest, parse_inject (the pure request validator).
Raises: OSError and ConfigError from ``MgmtServer.start``; ValueError from bad settings.
"""

from __future__ import annotations

from sluice.mgmt._access import (
    AccessMap,
    AccessRule,
    Role,
    bearer_matches,
    host_allowed,
    origin_allowed,
)
from sluice.mgmt._app import SERVICES, Endpoint, Handler, Services
from sluice.mgmt._compose import InjectRequest, parse_inject
from sluice.mgmt._errors import ApiError
from sluice.mgmt._server import MgmtServer
from sluice.mgmt._settings import DEFAULT_BIND, DEFAULT_MAX_REQUEST_SIZE, MgmtSettings

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_MAX_REQUEST_SIZE",
    "SERVICES",
    "AccessMap",
    "AccessRule",
    "ApiError",
    "Endpoint",
    "Handler",
    "InjectRequest",
    "MgmtServer",
    "MgmtSettings",
    "Role",
    "Services",
    "bearer_matches",
    "host_allowed",
    "origin_allowed",
    "parse_inject",
]
