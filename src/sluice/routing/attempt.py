"""The plan of one delivery attempt: which lookups to make and which hosts to connect to.

Modelled on dnspython's ``_Resolution``: an ``AttemptPlan`` holds all the decisions and does no
I/O. A short loop at the edge asks it ``next_step()``, performs the step, and feeds the outcome
back with ``result(...)``::

    plan = AttemptPlan("example.com", settings, rng)
    while True:
        step = plan.next_step()
        match step:
            case ResolveMx(name=n):        plan.result(await resolver.mx(n))
            case ResolveAddresses(host=h): plan.result(await resolver.addresses(h))
            case Connect():                plan.result(ConnectFailed(...) or Greeting(...))
            case Done(target=t, failure=f): break   # t: use this connection; f: give up

Rules (RFC 5321 §5.1, RFC 7505, test-plan.md §4): ``route`` beats ``smtp-hosts`` beats the
domain's MX; a bracketed host is connected to without an MX lookup; MX hosts are tried in
preference order (random among equals, from the injected rng); no MX but an address = implicit
MX; null MX = 5.1.10 with no connection; NXDOMAIN = 5.1.2; SERVFAIL/timeout = 4.4.3 and never an
A-record fallback; a host that resolves to one of our own listener endpoints, or an MX name
that is one of ours, ends the walk at that preference (5.4.6 when nothing is left); a failed
connection or a 4xx greeting falls back to the next address/host and is recorded as a
``FallbackEvent`` (logged when ``log-fallback-failures`` is on). DNS failures of an
operator-configured route are transient (a typo in the config must not bounce mail).

Public names: RouteSettings, ResolveMx, ResolveAddresses, Connect, Done, Step, ConnectFailed,
Greeting, FallbackEvent, AttemptPlan. ``AttemptPlan`` raises PlanMisuseError when fed a result
it did not ask for.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

from sluice.routing.answers import AddressAnswer, DnsFailure, MxAnswer, normalize_name
from sluice.routing.errors import PlanMisuseError
from sluice.routing.mx import (
    HostSpec,
    MxHost,
    Rng,
    RouteFailure,
    connect_failure,
    dns_temporary_failure,
    hosts_from_mx,
    is_ip_literal,
    loop_failure,
    no_mail_host_failure,
    rejected_failure,
    site_key,
)

__all__ = [
    "AttemptPlan",
    "Connect",
    "ConnectFailed",
    "Done",
    "FallbackEvent",
    "Greeting",
    "ResolveAddresses",
    "ResolveMx",
    "RouteSettings",
    "Step",
]

#: The SMTP port (RFC 5321 §4.5.4.2 / IANA); ``default-smtp-port`` overrides it.
SMTP_PORT = 25
#: Connection attempts per delivery attempt, over all hosts and addresses (Postfix's
#: ``smtp_mx_address_limit`` default is 5); the rest wait for the next retry.
MAX_CONNECT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSettings:
    """The routing settings of one queue, mapped from the configuration by the daemon.

    ``local_names``: our own host names (``host-name``, ``smtp-source-host`` names); an MX
    pointing at one of them is a loop. ``local_endpoints``: (IP, port) of our SMTP listeners,
    wildcard listeners expanded to concrete addresses by the caller.
    """

    default_smtp_port: int = SMTP_PORT
    route: HostSpec | None = None
    smtp_hosts: tuple[HostSpec, ...] = ()
    log_fallback_failures: bool = False
    bounce_upon_5xx_greeting: bool = True
    max_connect_attempts: int = MAX_CONNECT_ATTEMPTS
    local_names: frozenset[str] = frozenset()
    local_endpoints: frozenset[tuple[str, int]] = frozenset()


# --- steps (plan → caller) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveMx:
    """Look up the MX records of ``name`` and pass the ``MxAnswer`` to ``result``."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveAddresses:
    """Look up the A/AAAA records of ``host`` and pass the ``AddressAnswer`` to ``result``."""

    host: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect:
    """Connect to ``address``:``port`` (MX host ``host``), read the greeting, report it."""

    host: str
    address: str
    port: int
    preference: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """The plan is over: deliver on ``target`` (greeted with 2xx), or give up with ``failure``."""

    target: Connect | None = None
    failure: RouteFailure | None = None


Step = ResolveMx | ResolveAddresses | Connect | Done


# --- results (caller → plan) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed:
    """The TCP connection (or the wait for the greeting) failed; ``reason`` is for the log."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Greeting:
    """The server's greeting reply (RFC 5321 §4.2): ``code`` and its text."""

    code: int
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackEvent:
    """A host was given up for the next one (PowerMTA's "skip of MX" event)."""

    domain: str
    host: str
    address: str
    port: int
    reason: str


@dataclass(slots=True)
class _Host:
    name: str
    port: int | None
    preference: int
    group: int  # index of the source (route/smtp-hosts entry or the domain) it came from
    owned: bool  # came from the recipient domain's own DNS (failures may be permanent)
    addresses: tuple[str, ...] | None = None


def _canonical_ip(address: str) -> str:
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address


class AttemptPlan:
    """The lookups and connections of one delivery attempt to ``domain``."""

    def __init__(self, domain: str, settings: RouteSettings, rng: Rng) -> None:
        self.domain = normalize_name(domain)
        self._settings = settings
        self._rng = rng
        self._local_names = frozenset(normalize_name(n) for n in settings.local_names)
        self._local_endpoints = frozenset(
            (_canonical_ip(ip), port) for ip, port in settings.local_endpoints
        )
        if settings.route is not None:
            specs: tuple[HostSpec, ...] = (settings.route,)
        elif settings.smtp_hosts:
            specs = settings.smtp_hosts
        else:
            specs = ()
        self._owned = not specs
        if self._owned:
            specs = (HostSpec(name=self.domain),)
            self.site: str | None = None
        else:
            self.site = site_key([(s.name, s.port) for s in specs])
        self._sources: deque[tuple[HostSpec, int]] = deque((s, i) for i, s in enumerate(specs))
        self._hosts: deque[_Host] = deque()
        self._addresses: deque[str] = deque()
        self._current: _Host | None = None
        self._mx_source: tuple[HostSpec, int] | None = None
        self._pending: ResolveMx | ResolveAddresses | Connect | None = None
        self._done: Done | None = None
        self._connects = 0
        #: Every failure met so far, in order.
        self.failures: list[RouteFailure] = []
        #: Every host given up for the next one, in order.
        self.fallbacks: list[FallbackEvent] = []

    # --- public --------------------------------------------------------------------------------

    @property
    def connect_attempts(self) -> int:
        """How many ``Connect`` steps were handed out."""
        return self._connects

    def fallbacks_to_log(self) -> tuple[FallbackEvent, ...]:
        """The fallback events, if ``log-fallback-failures`` is on; else none."""
        return tuple(self.fallbacks) if self._settings.log_fallback_failures else ()

    def next_step(self) -> Step:
        """What to do next; the same step until its result is fed back."""
        if self._pending is not None:
            return self._pending
        while self._done is None:
            step = self._advance()
            if step is not None:
                self._pending = step
                return step
        return self._done

    def result(self, outcome: MxAnswer | AddressAnswer | ConnectFailed | Greeting) -> None:
        """Feed back the outcome of the step ``next_step()`` returned."""
        pending = self._pending
        match outcome:
            case MxAnswer() if isinstance(pending, ResolveMx):
                if normalize_name(outcome.domain) != normalize_name(pending.name):
                    raise PlanMisuseError(f"MX answer for {outcome.domain}, asked {pending.name}")
                self._pending = None
                self._on_mx(outcome)
            case AddressAnswer() if isinstance(pending, ResolveAddresses):
                if normalize_name(outcome.host) != normalize_name(pending.host):
                    raise PlanMisuseError(f"addresses of {outcome.host}, asked {pending.host}")
                self._pending = None
                self._on_addresses(outcome)
            case ConnectFailed() if isinstance(pending, Connect):
                self._pending = None
                failure = connect_failure(
                    pending.host, pending.address, pending.port, outcome.reason
                )
                self._give_up_host(pending, failure, outcome.reason)
            case Greeting() if isinstance(pending, Connect):
                self._pending = None
                self._on_greeting(pending, outcome)
            case _:
                raise PlanMisuseError(f"result {outcome!r} does not answer {pending!r}")

    def fallback(self, code: int, text: str) -> None:
        """After ``Done(target=...)``: the session failed for the whole site (e.g. a 421
        mid-session); give this host up and continue with the next one."""
        done = self._done
        if done is None or done.target is None:
            raise PlanMisuseError("fallback() is only valid after Done(target=...)")
        self._done = None
        failure = rejected_failure(code, text, permanent=False)
        self._give_up_host(done.target, failure, f"{code} {text}".strip())

    # --- internals -----------------------------------------------------------------------------

    def _advance(self) -> ResolveMx | ResolveAddresses | Connect | None:
        """One move of the walk; returns a step for the caller, or None to keep walking."""
        settings = self._settings
        if self._addresses:
            host = self._current
            assert host is not None
            if self._connects >= settings.max_connect_attempts:
                self._finish()
                return None
            address = self._addresses.popleft()
            port = host.port if host.port is not None else settings.default_smtp_port
            if (_canonical_ip(address), port) in self._local_endpoints:
                self._on_loop(host)
                return None
            self._connects += 1
            return Connect(host=host.name, address=address, port=port, preference=host.preference)
        if self._hosts:
            host = self._hosts.popleft()
            self._current = host
            if host.addresses is not None:
                self._addresses = deque(host.addresses)
                return None
            return ResolveAddresses(host=host.name)
        if self._sources:
            spec, group = self._sources.popleft()
            if spec.literal:
                addresses = (spec.name,) if is_ip_literal(spec.name) else None
                self._hosts.append(
                    _Host(spec.name, spec.port, 0, group, owned=False, addresses=addresses)
                )
                return None
            self._mx_source = (spec, group)
            return ResolveMx(name=spec.name)
        self._finish()
        return None

    def _on_mx(self, answer: MxAnswer) -> None:
        assert self._mx_source is not None
        spec, group = self._mx_source
        found = hosts_from_mx(answer, self._rng, local_names=self._local_names)
        hosts: tuple[MxHost, ...]
        if found is None:  # NODATA: the implicit MX (RFC 5321 §5.1)
            hosts = (MxHost(name=spec.name, preference=0),)
        elif isinstance(found, RouteFailure):
            if not self._owned and found.permanent and found.status != "5.4.6":
                found = no_mail_host_failure(spec.name, permanent=False)
            self.failures.append(found)
            return
        else:
            hosts = found
        if self._owned and self.site is None:
            self.site = site_key([(h.name, spec.port) for h in hosts])
        for h in hosts:
            self._hosts.append(_Host(h.name, spec.port, h.preference, group, owned=self._owned))

    def _on_addresses(self, answer: AddressAnswer) -> None:
        host = self._current
        assert host is not None
        if answer.failure is None:
            host.addresses = answer.addresses
            self._addresses = deque(answer.addresses)
        elif answer.failure in (DnsFailure.SERVFAIL, DnsFailure.TIMEOUT):
            self.failures.append(dns_temporary_failure(host.name, "the address", answer.failure))
        else:
            self.failures.append(no_mail_host_failure(host.name, permanent=host.owned))

    def _on_greeting(self, target: Connect, greeting: Greeting) -> None:
        if 200 <= greeting.code < 300:
            self._done = Done(target=target)
            return
        if greeting.code >= 500 and self._settings.bounce_upon_5xx_greeting:
            self._done = Done(
                failure=rejected_failure(greeting.code, greeting.text, permanent=True)
            )
            return
        failure = rejected_failure(greeting.code, greeting.text, permanent=False)
        self._give_up_host(target, failure, f"{greeting.code} {greeting.text}".strip())

    def _give_up_host(self, target: Connect, failure: RouteFailure, reason: str) -> None:
        self.failures.append(failure)
        self.fallbacks.append(
            FallbackEvent(
                domain=self.domain,
                host=target.host,
                address=target.address,
                port=target.port,
                reason=reason,
            )
        )

    def _on_loop(self, host: _Host) -> None:
        # RFC 5321 §5.1: drop ourselves and every host of the same set at our preference or
        # higher (hosts are ordered, so: the rest of this host's group).
        self.failures.append(loop_failure(self.domain))
        self._addresses.clear()
        self._hosts = deque(
            h for h in self._hosts if h.group != host.group or h.preference < host.preference
        )

    def _finish(self) -> None:
        transient = [f for f in self.failures if f.transient]
        if transient:
            failure = transient[-1]  # the latest: usually what the last host said
        elif self.failures:
            failure = self.failures[0]
        else:
            failure = no_mail_host_failure(self.domain, permanent=False)
        self._done = Done(failure=failure)
