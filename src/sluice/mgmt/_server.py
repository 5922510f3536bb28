"""The management HTTP server: one aiohttp application, access control, JSON errors.

Every request passes one guard before its handler runs, in this order:

1. the client's address → :class:`~sluice.mgmt.Role` (``http-access``; loopback admin by
   default); ``none`` → 403;
2. the ``Host`` header must be an IP literal, ``localhost`` or a configured name → 421
   (DNS rebinding);
3. an ``Origin`` header, when present, must be this server's own origin → 403 (CSRF);
4. the endpoint's role: a monitor client calling an admin endpoint → 403; an admin endpoint
   with ``http-mgmt-token-file`` set needs ``Authorization: Bearer <token>`` → 401.

Every error, including aiohttp's own 404/405/413, is answered as JSON
``{"error": ..., "field": ...}``. The token is compared in constant time and never logged.

Public names: MgmtServer. ``start`` raises OSError when an address cannot be bound and
:class:`~sluice.errors.ConfigError` when the token file cannot be read or is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from sluice.clock import Clock
from sluice.errors import ConfigError
from sluice.intake.inject import Injector, OnReceived
from sluice.intake.policy import SourcePolicyMap
from sluice.mgmt._access import (
    AccessMap,
    Role,
    bearer_matches,
    host_allowed,
    origin_allowed,
)
from sluice.mgmt._app import SERVICES, Endpoint, Handler, Services, json_response, peer_ip
from sluice.mgmt._errors import ApiError
from sluice.mgmt._inject import ENDPOINTS as INJECT_ENDPOINTS
from sluice.mgmt._settings import MgmtSettings

__all__ = ["MgmtServer"]

log = logging.getLogger("sluice.mgmt")

#: How long ``stop`` lets requests in flight (an injection waiting for its group commit)
#: finish before their connections are closed.
SHUTDOWN_GRACE_SECONDS = 10.0
#: RFC 6750 §3: the challenge sent with 401.
_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="sluice"'),)
#: Sent with every response: API answers are never cached, sniffed or framed.
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class _HttpLog(logging.Logger):
    """aiohttp's server logger: a malformed request (bad request line, missing Host, oversized
    header) is the client's fault, so it is logged at debug level without a traceback
    instead of as an error (a flood of garbage must not fill the log)."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kw: Any) -> None:
        detail = exc_info if isinstance(exc_info, BaseException) else None
        self.debug("%s: %s", msg, detail if detail is not None else "see above")


def _http_log() -> logging.Logger:
    logger = _HttpLog("sluice.mgmt.http")
    logger.parent = log
    return logger


def _read_token(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"http-mgmt-token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"http-mgmt-token-file {path}: the file is empty")
    return token


class MgmtServer:
    """The HTTP management interface on ``http-mgmt-port`` (see the module docstring).

    ``endpoints`` adds routes beyond HTTP injection (status pages, metrics); they must be
    given before :meth:`start`.
    """

    __slots__ = ("_access", "_names", "_routes", "_runner", "_settings", "_token", "app")

    def __init__(
        self,
        settings: MgmtSettings,
        *,
        injector: Injector,
        policies: SourcePolicyMap,
        on_received: OnReceived | None,
        clock: Clock,
        endpoints: Iterable[Endpoint] = (),
    ) -> None:
        self._settings = settings
        self._access = AccessMap(settings.access)
        self._names = settings.host_names
        self._token: bytes | None = None
        self._runner: web.AppRunner | None = None
        self._routes: dict[int, Endpoint] = {}
        self.app = web.Application(
            client_max_size=settings.max_request_size, middlewares=[self._middleware()]
        )
        self.app[SERVICES] = Services(
            injector=injector, policies=policies, on_received=on_received, clock=clock
        )
        self.app.on_response_prepare.append(_add_security_headers)
        self.add(INJECT_ENDPOINTS)
        self.add(endpoints)

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    @property
    def busy(self) -> tuple[int, str, str] | None:
        """Set by the daemon while ``max-cpu-usage`` refuses injections (HTTP 503)."""
        return self.services.busy

    @busy.setter
    def busy(self, value: tuple[int, str, str] | None) -> None:
        self.services.busy = value

    def add(self, endpoints: Iterable[Endpoint]) -> None:
        """Register routes (before :meth:`start`)."""
        for endpoint in endpoints:
            route = self.app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
            self._routes[id(route)] = endpoint

    def update(self, settings: MgmtSettings, policies: SourcePolicyMap | None = None) -> None:
        """Reload: new access rules, Host names and token (and source policies) apply to
        the next request. Port and bind addresses need a restart. Raises ConfigError when
        the new token file cannot be read (the old settings stay)."""
        token = _read_token(settings.token_file) if settings.token_file else None
        self._settings = settings
        self._access = AccessMap(settings.access)
        self._names = settings.host_names
        self._token = token
        if policies is not None:
            self.services.policies = policies

    async def start(self) -> list[tuple[str, int]]:
        """Bind every address of ``settings.bind`` and serve; returns (host, port) pairs."""
        settings = self._settings
        self._token = _read_token(settings.token_file) if settings.token_file else None
        runner = web.AppRunner(
            self.app,
            access_log=None,
            logger=_http_log(),
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        )
        await runner.setup()
        try:
            for host in settings.bind:
                await web.TCPSite(runner, host, settings.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = [(str(a[0]), int(a[1])) for a in runner.addresses]
        log.info(
            "management interface on %s%s",
            ", ".join(f"{h}:{p}" for h, p in bound),
            " (admin requests need the token)" if self._token is not None else "",
        )
        return bound

    async def stop(self) -> None:
        """Stop listening; requests in flight get :data:`SHUTDOWN_GRACE_SECONDS` to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ---- the guard ----------------------------------------------------------------------

    def _admit(self, request: web.Request) -> None:
        """Raise ApiError unless this client may make this request."""
        role = self._access.role_of(peer_ip(request))
        if role is Role.NONE:
            raise ApiError(403, "access denied for this client address")
        host = request.headers.get("Host")
        if not host_allowed(host, self._names):
            raise ApiError(421, "Host header does not name this server", field="Host")
        if not origin_allowed(request.headers.get("Origin"), host):
            raise ApiError(403, "cross-origin request refused", field="Origin")
        endpoint = self._routes.get(id(request.match_info.route))
        if endpoint is None:
            return  # no such route: aiohttp answers 404/405
        if role < endpoint.role:
            raise ApiError(403, f"this request needs the {endpoint.role.name.lower()} role")
        token = self._token
        if (
            endpoint.role is Role.ADMIN
            and token is not None
            and not bearer_matches(request.headers.get("Authorization"), token)
        ):
            raise ApiError(
                401, "missing or wrong bearer token", field="Authorization", headers=_CHALLENGE
            )

    def _middleware(self) -> Middleware:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                self._admit(request)
                return await handler(request)
            except ApiError as exc:
                if exc.status in (401, 403, 421):
                    log.debug(
                        "refused %s %s from %s: %s",
                        request.method,
                        request.path,
                        peer_ip(request),
                        exc.error,
                    )
                return json_response(exc.body(), status=exc.status, headers=dict(exc.headers))
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
                body = {"error": exc.reason.lower(), "field": None}
                return json_response(body, status=exc.status, headers=headers)
            except Exception:
                log.exception("management request %s %s failed", request.method, request.path)
                return json_response({"error": "internal error", "field": None}, status=500)

        return guard


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_SECURITY_HEADERS)
