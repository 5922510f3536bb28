"""Source policy: the ``<source>`` settings and the pure decisions intake makes with them.

Nothing here does I/O; every decision takes the policy and the facts and returns either
``None`` (accept) or a :class:`~sluice.errors.ReplyHint` (the refusal to send). The session
turns a hint into a wire reply.

Public names:

- :class:`SourcePolicy`: one ``<source>`` block, resolved.
- :class:`SourcePolicyMap`: CIDR → policy, most specific prefix wins. When nothing matches,
  a built-in default applies in which **only loopback clients may relay**
  (``always_allow_relaying`` is true for 127.0.0.0/8 and ::1, false for everyone else).
- :func:`check_connect`, :func:`check_mail`, :func:`check_rcpt`, :func:`check_size`,
  :func:`check_vmta`: the decisions; :func:`rcpt_domain`: the domain a recipient is routed by.
- The refusals, as constants: :data:`REFUSE_SERVICE`, :data:`RELAY_DENIED`,
  :data:`RELAY_TRICK`, :data:`TOO_MANY_RCPTS`, :data:`TOO_BIG`, :data:`NO_DOMAIN`.

:class:`SourcePolicyMap` raises ``ValueError`` for a malformed CIDR.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from sluice.errors import ReplyHint
from sluice.smtp.limits import BareLineEnding, LongLinePolicy

__all__ = [
    "NO_DOMAIN",
    "REFUSE_SERVICE",
    "RELAY_DENIED",
    "RELAY_TRICK",
    "TOO_BIG",
    "TOO_MANY_RCPTS",
    "SourcePolicy",
    "SourcePolicyMap",
    "check_connect",
    "check_mail",
    "check_rcpt",
    "check_size",
    "check_vmta",
    "rcpt_domain",
    "unknown_vmta_reply",
]

#: RFC 5321 §4.5.3.1.8 asks servers to accept at least 100 recipients; Postfix's
#: ``smtpd_recipient_limit`` default is 1000. Bulk injectors send one to a few per message.
DEFAULT_MAX_RCPT_PER_MESSAGE = 1000

#: The job header PowerMTA reads when ``process-x-job`` is on (powermta.md §6).
DEFAULT_JOBID_HEADER = "X-Job"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourcePolicy:
    """One resolved ``<source>`` block (powermta.md §7); defaults are PowerMTA's or ours."""

    #: ``smtp-service``: false → the client gets 554 at the banner.
    smtp_service: bool = True
    #: ``always-allow-relaying``: the client may send to any domain.
    always_allow_relaying: bool = False
    #: ``max-message-size`` in octets; 0 means unlimited.
    max_message_size: int = 0
    #: ``max-rcpt-per-message``: recipients beyond it get 452 4.5.3 (RFC 5321 §4.5.3.1.10).
    max_rcpt_per_message: int = DEFAULT_MAX_RCPT_PER_MESSAGE
    process_x_virtual_mta: bool = False
    process_x_job: bool = False
    process_x_envid: bool = False
    #: ``jobid-header``: which header carries the job id when ``process_x_job`` is on.
    jobid_header: str = DEFAULT_JOBID_HEADER
    retain_x_virtual_mta: bool = False
    retain_x_job: bool = False
    #: ``default-virtual-mta``: VMTA or pool when the message names none.
    default_virtual_mta: str | None = None
    add_received_header: bool = True
    #: ``hide-message-source``: the Received header omits the client's address and name.
    hide_message_source: bool = False
    add_message_id_header: bool = False
    add_date_header: bool = False
    log_connections: bool = False
    log_commands: bool = False
    #: A bare LF or CR in DATA: REJECT (554 and close) or NORMALIZE (stored as CRLF); never
    #: an end of data either way (the engine's :class:`~sluice.smtp.BareLineEnding`).
    bare_lf_policy: BareLineEnding = BareLineEnding.REJECT
    #: A content line over 998 octets: REJECT (554 5.6.0 at the dot) or ACCEPT (stored;
    #: the envelope is tagged ``long-lines`` so delivery wraps it). Not a PowerMTA name.
    long_lines: LongLinePolicy = LongLinePolicy.REJECT
    #: Domains accepted for local delivery from clients that may not relay (lower case,
    #: no trailing dot). Usually empty: Sluice is an outbound MTA.
    relay_domains: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        if self.max_message_size < 0:
            raise ValueError("max_message_size must be >= 0 (0 = unlimited)")
        if self.max_rcpt_per_message < 1:
            raise ValueError("max_rcpt_per_message must be >= 1")
        if not self.jobid_header or ":" in self.jobid_header:
            raise ValueError(f"bad jobid_header {self.jobid_header!r}")


_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_network("::1/128")
_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
#: How many distinct client addresses the lookup cache remembers before it starts over.
_CACHE_LIMIT = 4096


class SourcePolicyMap:
    """Client address → :class:`SourcePolicy`; the longest matching prefix wins.

    ``entries`` are ``(cidr, policy)`` pairs; a bare address is a /32 (or /128), and
    PowerMTA's ``0/0`` means every IPv4 and IPv6 client. ``fallback`` is used when no entry
    matches; it defaults to ``SourcePolicy()`` with relaying allowed for loopback clients
    only (the built-in default of issue 3: "only loopback may relay").
    """

    __slots__ = ("_cache", "_fallback", "_fallback_loopback", "_v4", "_v6")

    def __init__(
        self,
        entries: Iterable[tuple[str, SourcePolicy]] = (),
        *,
        fallback: SourcePolicy | None = None,
    ) -> None:
        v4: list[tuple[ipaddress.IPv4Network, SourcePolicy]] = []
        v6: list[tuple[ipaddress.IPv6Network, SourcePolicy]] = []
        for cidr, policy in entries:
            for net in _parse_cidr(cidr):
                if isinstance(net, ipaddress.IPv4Network):
                    v4.append((net, policy))
                else:
                    v6.append((net, policy))
        v4.sort(key=lambda item: item[0].prefixlen, reverse=True)
        v6.sort(key=lambda item: item[0].prefixlen, reverse=True)
        self._v4 = tuple(v4)
        self._v6 = tuple(v6)
        base = fallback if fallback is not None else SourcePolicy()
        if fallback is None:
            self._fallback = replace(base, always_allow_relaying=False)
            self._fallback_loopback = replace(base, always_allow_relaying=True)
        else:
            self._fallback = self._fallback_loopback = base
        self._cache: dict[str, SourcePolicy] = {}

    def lookup(self, ip: str) -> SourcePolicy:
        """The policy for client address ``ip`` (IPv4-mapped IPv6 counts as IPv4)."""
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        policy = self._lookup(ip)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = policy
        return policy

    def _lookup(self, ip: str) -> SourcePolicy:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return self._fallback
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if isinstance(addr, ipaddress.IPv4Address):
            for net4, policy in self._v4:
                if addr in net4:
                    return policy
            return self._fallback_loopback if addr in _LOOPBACK_V4 else self._fallback
        for net6, policy in self._v6:
            if addr in net6:
                return policy
        return self._fallback_loopback if addr in _LOOPBACK_V6 else self._fallback


def _parse_cidr(text: str) -> tuple[_Net, ...]:
    """``"10.1.0/24"``-style PowerMTA CIDRs, ``0/0`` (both families), bare addresses."""
    text = text.strip()
    if text in ("0/0", "*", "default"):
        return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    addr, _, plen = text.partition("/")
    if ":" not in addr and addr.count(".") < 3 and plen:
        # PowerMTA allows truncated dotted quads: 10.1.0/24 means 10.1.0.0/24.
        parts = [p for p in addr.split(".") if p]
        addr = ".".join([*parts, *(["0"] * (4 - len(parts)))])
    spec = f"{addr}/{plen}" if plen else addr
    return (ipaddress.ip_network(spec, strict=False),)


# --- refusals -----------------------------------------------------------------------------

#: ``smtp-service no`` for this client (RFC 5321 §3.1: 554 instead of the greeting).
REFUSE_SERVICE = ReplyHint(code=554, enhanced="5.7.1", text="SMTP service not available to you")
#: The client may not relay and the domain is not ours (RFC 5321 §3.6.2, RFC 3463 X.7.1).
RELAY_DENIED = ReplyHint(code=550, enhanced="5.7.1", text="Relaying denied")
#: Percent hack, bang path, source route or quoted "@" from a client that may not relay.
RELAY_TRICK = ReplyHint(
    code=550, enhanced="5.7.1", text="Relaying denied: routing syntax in address not allowed"
)
#: Past ``max-rcpt-per-message`` (RFC 5321 §4.5.3.1.10, RFC 3463 X.5.3).
TOO_MANY_RCPTS = ReplyHint(code=452, enhanced="4.5.3", text="Too many recipients")
#: Past ``max-message-size`` (RFC 1870 §6, RFC 3463 X.3.4).
TOO_BIG = ReplyHint(code=552, enhanced="5.3.4", text="Message size exceeds fixed limit")
#: A recipient without a domain cannot be routed (RFC 3463 X.1.3).
NO_DOMAIN = ReplyHint(code=501, enhanced="5.1.3", text="Recipient address needs a domain")


def unknown_vmta_reply(name: str) -> ReplyHint:
    """The refusal at end of DATA for an ``X-Virtual-MTA`` naming no VMTA or pool.

    550 5.7.1: permanent, so the injector does not retry a message that can never be routed,
    and X.7.1 ("delivery not authorized") because the message asks for a sending identity
    this server does not grant. The name is echoed (sanitised) so the operator can see it.
    """
    safe = "".join(ch for ch in name[:64] if " " < ch < "\x7f")
    return ReplyHint(code=550, enhanced="5.7.1", text=f"Unknown virtual MTA or pool '{safe}'")


# --- decisions ----------------------------------------------------------------------------


def check_connect(policy: SourcePolicy) -> ReplyHint | None:
    """At connect: ``None`` to greet, or the refusal to send instead of a greeting."""
    return None if policy.smtp_service else REFUSE_SERVICE


def check_mail(policy: SourcePolicy, declared_size: int | None) -> ReplyHint | None:
    """At MAIL FROM: the RFC 1870 ``SIZE=`` parameter against ``max-message-size``."""
    limit = policy.max_message_size
    if limit and declared_size is not None and declared_size > limit:
        return TOO_BIG
    return None


def check_size(policy: SourcePolicy, size: int) -> ReplyHint | None:
    """At end of data: the received size against ``max-message-size``."""
    limit = policy.max_message_size
    return TOO_BIG if limit and size > limit else None


def rcpt_domain(address: str) -> str | None:
    """The domain a recipient is routed by: after the last ``@``, lower case, no final dot.

    A source route (``@a,@b:user@dom``, RFC 5321 §4.1.1.3, "SHOULD be ignored") is dropped
    first. ``None`` when the address has no domain.
    """
    if address.startswith("@"):
        _, _, address = address.partition(":")
    at = address.rfind("@")
    if at < 0:
        return None
    domain = address[at + 1 :].rstrip(".").lower()
    return domain or None


def _has_relay_trick(address: str) -> bool:
    """True for routing syntax a relay-tester uses (test-plan A3)."""
    if address.startswith("@"):
        return True  # source route
    at = address.rfind("@")
    local = address[:at] if at >= 0 else address
    # Percent hack, bang path, or an "@" inside the local part (quoted or not).
    return "%" in local or "!" in local or "@" in local or "\\" in local


def check_rcpt(
    policy: SourcePolicy, address: str, accepted_so_far: int, *, routed: bool = False
) -> ReplyHint | None:
    """At RCPT TO: relay rules, open-relay syntax and ``max-rcpt-per-message``.

    ``address`` is the path as received, without angle brackets (quotes kept); ``routed``
    says a source route came with it (when the parser split it off). A client that
    may relay has every address routed literally by :func:`rcpt_domain` (the embedded ``%``
    or ``!`` domain is never used). A client that may not relay is limited to
    ``relay_domains`` and never gets routing syntax through.
    """
    if accepted_so_far >= policy.max_rcpt_per_message:
        return TOO_MANY_RCPTS
    domain = rcpt_domain(address)
    if policy.always_allow_relaying:
        return None if domain is not None else NO_DOMAIN
    if routed or _has_relay_trick(address):
        return RELAY_TRICK
    if domain is None or domain not in policy.relay_domains:
        return RELAY_DENIED
    return None


def check_vmta(name: str, known: frozenset[str] | None) -> ReplyHint | None:
    """At end of data: a VMTA or pool name (lower case) against the configured names.

    ``known=None`` disables the check (no VMTAs configured yet, e.g. in unit tests).
    """
    if known is None or name in known:
        return None
    return unknown_vmta_reply(name)
