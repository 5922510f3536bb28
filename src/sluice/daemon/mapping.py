"""Config model → the settings objects each part takes (intake, scheduler, routing, accounting).

Every part defines its own small frozen settings dataclass and never imports the
configuration layer; this module is the one place that reads the resolved model and fills
them in. Nothing here does I/O.

Public names: ConfigSourceMap, listener_limits, queue_settings, route_settings,
acct_settings, local_names, DEFAULT_HOSTNAME.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from sluice.acct.records import AcctLayout, RecordType
from sluice.acct.writer import AcctFileSettings
from sluice.config import Config, QueuePolicy
from sluice.config import SourcePolicy as ConfigSourcePolicy
from sluice.config._values_net import HostPort
from sluice.config.model import BackoffRule, Settings
from sluice.config.values import Rate, RecordFields, VolumeRate
from sluice.delivery.settings import DeliverySettings
from sluice.intake.listener import ListenerLimits
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.routing import RouteSettings, parse_host_list, parse_host_spec
from sluice.sched import (
    NEVER,
    BackoffSettings,
    QueueSettings,
    RateLimit,
    ReplyRule,
    SourceIp,
)
from sluice.smtp import BareLineEnding

__all__ = [
    "DEFAULT_HOSTNAME",
    "ConfigSourceMap",
    "acct_settings",
    "configured_host_name",
    "delivery_settings",
    "dns_servers",
    "global_value",
    "known_vmtas",
    "listener_limits",
    "local_names",
    "queue_settings",
    "rate_limit",
    "reply_rule",
    "route_settings",
    "source_ips",
]

#: EHLO/Received name when the configuration sets no ``host-name`` (the daemon passes the
#: machine's name instead when it can read it).
DEFAULT_HOSTNAME = "localhost"
#: ``never`` as a bounce-after: effectively forever (100 years) for the scheduler's arithmetic.
_FOREVER = 100 * 365 * 86400.0

IPAddress = IPv4Address | IPv6Address

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _value(settings: Settings, name: str, default: object) -> object:
    setting = settings.get(name)
    if setting is None or setting.value is None:
        return default
    return setting.value


def global_value(config: Config, name: str, default: object = None) -> object:
    """A global directive's typed value, or ``default`` when unset (or ``never``)."""
    return _value(config.global_settings, name, default)


def _get(policy: ConfigSourcePolicy | QueuePolicy, name: str, default: object) -> object:
    return _value(policy.settings, name, default)


def _bool(policy: ConfigSourcePolicy | QueuePolicy, name: str, default: bool) -> bool:
    value = _get(policy, name, default)
    if isinstance(value, str):  # enum kinds such as dkim-sign keep the word
        return value.lower() in {"yes", "true"}
    return bool(value)


def _int(policy: ConfigSourcePolicy | QueuePolicy, name: str, default: int) -> int:
    value = _get(policy, name, default)
    return int(value) if isinstance(value, int) else default


def _seconds(policy: QueuePolicy, name: str, default: float) -> float:
    value = _get(policy, name, None)
    if value is None:
        return default
    return float(value) if isinstance(value, int) else default


class ConfigSourceMap(SourcePolicyMap):
    """The intake's source lookup backed by the configuration's ``<source>`` resolution.

    Most specific ``<source>`` block first, falling back through less specific ones to the
    global settings (docs/config.md). When the configuration has no address ``<source>``
    block at all, a client from loopback may relay (the intake's built-in default); once the
    operator writes address rules, they alone decide, so with only ``<source 127.0.0.1>``
    a client at 127.0.0.66 may not relay (test-plan T09).
    """

    __slots__ = ("_by_match", "_config", "_loopback_default", "_relay_domains")

    def __init__(self, config: Config) -> None:
        super().__init__()
        self._config = config
        self._loopback_default = not any(r.network is not None for r in config.sources)
        self._by_match: dict[tuple[str, ...], SourcePolicy] = {}
        relay = config.global_settings.get("relay-domain")
        domains: set[str] = set()
        if relay is not None and relay.value:
            values = relay.value if isinstance(relay.value, tuple) else (relay.value,)
            domains.update(str(v).lower().rstrip(".") for v in values)
        self._relay_domains = frozenset(domains)

    def _lookup(self, ip: str) -> SourcePolicy:
        try:
            resolved = self._config.source_for(ip.split("%", 1)[0])
        except ValueError:
            return super()._lookup(ip)
        cached = self._by_match.get(resolved.matched)
        if cached is not None:
            return cached
        policy = source_policy(resolved, self._relay_domains)
        if not resolved.matched and self._loopback_default and _is_loopback(resolved.ip):
            policy = replace(policy, always_allow_relaying=True)
        if not resolved.matched:
            # Cache per loopback-ness only: unmatched clients share one of two policies.
            return policy
        self._by_match[resolved.matched] = policy
        return policy


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in net for net in _LOOPBACK if addr.version == net.version)


def source_policy(resolved: ConfigSourcePolicy, relay_domains: frozenset[str]) -> SourcePolicy:
    """One resolved ``<source>`` → the intake's :class:`SourcePolicy`."""
    size = _get(resolved, "max-message-size", 0)
    default_vmta = _get(resolved, "default-virtual-mta", None)
    bare = str(_get(resolved, "bare-lf-policy", "reject")).lower()
    return SourcePolicy(
        smtp_service=_bool(resolved, "smtp-service", True),
        always_allow_relaying=_bool(resolved, "always-allow-relaying", False),
        max_message_size=int(size) if isinstance(size, int) else 0,
        max_rcpt_per_message=max(1, _int(resolved, "max-rcpt-per-message", 1000)),
        process_x_virtual_mta=_bool(resolved, "process-x-virtual-mta", False),
        process_x_job=_bool(resolved, "process-x-job", False),
        process_x_envid=_bool(resolved, "process-x-envid", False),
        jobid_header=str(_get(resolved, "jobid-header", "X-Job")),
        retain_x_virtual_mta=_bool(resolved, "retain-x-virtual-mta", False),
        retain_x_job=_bool(resolved, "retain-x-job", False),
        default_virtual_mta=str(default_vmta) if default_vmta else None,
        add_received_header=_bool(resolved, "add-received-header", True),
        hide_message_source=_bool(resolved, "hide-message-source", False),
        add_message_id_header=_bool(resolved, "add-message-id-header", False),
        add_date_header=_bool(resolved, "add-date-header", False),
        log_connections=_bool(resolved, "log-connections", False),
        log_commands=_bool(resolved, "log-commands", False),
        bare_lf_policy=(BareLineEnding.NORMALIZE if bare == "normalize" else BareLineEnding.REJECT),
        relay_domains=relay_domains,
    )


def listener_limits(config: Config) -> ListenerLimits:
    """Global intake caps and timeouts (``total-max-smtp-in``, Sluice's timeouts)."""
    total = global_value(config, "total-max-smtp-in", 1000)
    per_client = global_value(config, "max-smtp-in-per-client", 100)
    command = global_value(config, "smtp-command-timeout", 300)
    idle = global_value(config, "smtp-idle-timeout", 300)
    return ListenerLimits(
        command_timeout=float(command) if isinstance(command, int) else 300.0,
        idle_timeout=float(idle) if isinstance(idle, int) else 300.0,
        total_max_smtp_in=int(total) if isinstance(total, int) else 1000,
        max_smtp_in_per_client=int(per_client) if isinstance(per_client, int) else 100,
    )


def _retry_list(policy: QueuePolicy, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    value = _get(policy, name, None)
    if isinstance(value, tuple) and value:
        return tuple(float(v) for v in value)
    if isinstance(value, int):
        return (float(value),)
    return default


def rate_limit(value: object) -> RateLimit | None:
    """A config ``Rate`` (``N/[M]unit``) → the scheduler's smooth limit; unlimited → None."""
    if isinstance(value, Rate) and value.count > 0 and value.seconds > 0:
        return RateLimit(count=value.count, seconds=float(value.seconds))
    if isinstance(value, VolumeRate) and value.size > 0 and value.seconds > 0:
        return RateLimit(count=value.size, seconds=float(value.seconds))
    return None


def _duration_or_never(policy: QueuePolicy, name: str, default: float) -> float:
    setting = policy.settings.get(name)
    if setting is None:
        return default
    if setting.value is None:
        return NEVER
    return float(setting.value) if isinstance(setting.value, int) else default


def reply_rule(rule: BackoffRule) -> ReplyRule:
    """A config reply rule (seed inline form or ``<smtp-pattern-list>`` line) → the scheduler's."""
    seed_form = rule.code is not None and rule.literal is not None
    return ReplyRule(
        pattern=None if seed_form else rule.pattern,
        code=rule.code if seed_form else None,
        literal=rule.literal if seed_form else None,
        mode=rule.mode,
        to_normal_after=float(rule.duration) if rule.duration is not None else None,
        max_smtp_out=rule.max_smtp_out,
        max_msg_rate=rate_limit(rule.max_msg_rate),
        disable_source_ip=rule.disable_source_ip,
        reenable_after=float(rule.reenable_after) if rule.reenable_after is not None else None,
        text=rule.text,
    )


def queue_settings(policy: QueuePolicy, sources: tuple[SourceIp, ...] = ()) -> QueueSettings:
    """A queue's resolved policy → the scheduler's :class:`QueueSettings` (limits, backoff)."""
    bounce_after = _get(policy, "bounce-after", None)
    rcpts = _get(policy, "max-rcpt-per-message", 0)
    backoff_out = _get(policy, "backoff-max-smtp-out", None)
    backoff_rate = rate_limit(_get(policy, "backoff-max-msg-rate", None))
    reroute = _get(policy, "backoff-reroute-to-virtual-mta", None)
    return QueueSettings(
        max_smtp_out=_int(policy, "max-smtp-out", 20),
        max_msg_per_connection=_int(policy, "max-msg-per-connection", 0),
        max_errors_per_connection=_int(policy, "max-errors-per-connection", 0),
        max_rcpt_per_message=int(rcpts) if isinstance(rcpts, int) else 0,
        retry_after=_retry_list(policy, "retry-after", (600.0,)),
        min_retry_interval=_seconds(policy, "min-retry-interval", 0.0),
        bounce_after=float(bounce_after) if isinstance(bounce_after, int) else _FOREVER,
        bounce_on_4xx=_bool(policy, "bounce-on-4xx-status", False),
        retry_after_dns_error=_seconds(policy, "retry-after-dns-error", 60.0),
        queue_priority=min(100, max(0, _int(policy, "queue-priority", 50))),
        connection_idle_timeout=_seconds(policy, "connection-idle-timeout", 0.0),
        max_msg_rate=rate_limit(_get(policy, "max-msg-rate", None)),
        max_connect_rate=rate_limit(_get(policy, "max-connect-rate", None)),
        max_data_volume_rate=rate_limit(_get(policy, "max-data-volume-rate", None)),
        smtp_out_rampup_interval=_seconds(policy, "smtp-out-rampup-interval", 0.0),
        allow_priority_interruption=_bool(policy, "allow-priority-interruption", True),
        reenable_source_ip_after=_duration_or_never(policy, "reenable-source-ip-after", NEVER),
        reply_rules=tuple(reply_rule(r) for r in policy.backoff_rules),
        sources=sources,
        backoff=BackoffSettings(
            max_smtp_out=int(backoff_out) if isinstance(backoff_out, int) else None,
            retry_after=_retry_list(policy, "backoff-retry-after", (3600.0,)),
            max_msg_rate=backoff_rate,
            max_connect_rate=rate_limit(_get(policy, "backoff-max-connect-rate", None)),
            max_data_volume_rate=rate_limit(_get(policy, "backoff-max-data-volume-rate", None)),
            to_normal_after=_duration_or_never(policy, "backoff-to-normal-after", NEVER),
            to_normal_after_delivery=_bool(policy, "backoff-to-normal-after-delivery", False),
            reroute_to_vmta=str(reroute) if reroute else None,
            upon_all_sources_disabled=_bool(policy, "backoff-upon-all-sources-disabled", False),
        ),
    )


def source_ips(config: Config, vmta: str, group: str) -> tuple[SourceIp, ...]:
    """A VMTA's ``smtp-source-host`` addresses as the scheduler's source IPs for one queue
    group (the domain after ``queue-to``), with the ``source-ip-max-*`` limits whose CIDR
    matches each address (global settings)."""
    found = config.vmtas.get(vmta)
    if found is None:
        return ()
    g = config.global_settings
    out: list[SourceIp] = []
    for host in found.source_hosts:
        address = ipaddress.ip_address(str(host.first))

        def limit(name: str, address: IPAddress = address) -> object:
            setting = g.get(name)
            if setting is None or setting.value is None:
                return None
            values = setting.value if isinstance(setting.value, tuple) else (setting.value,)
            best: tuple[int, object] | None = None
            for item in values:
                if not (isinstance(item, tuple) and len(item) == 2):
                    continue
                net, value = item
                if (
                    isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
                    and net.version == address.version
                    and address in net
                    and (best is None or net.prefixlen > best[0])
                ):
                    best = (net.prefixlen, value)
            return None if best is None else best[1]

        conns = limit("source-ip-max-smtp-out")
        out.append(
            SourceIp(
                address=str(address),
                group=group,
                max_smtp_out=int(conns) if isinstance(conns, int) else 0,
                max_msg_rate=rate_limit(limit("source-ip-max-msg-rate")),
                max_connect_rate=rate_limit(limit("source-ip-max-connect-rate")),
            )
        )
    return tuple(out)


def local_names(config: Config) -> frozenset[str]:
    """Our own host names: ``host-name`` and every ``smtp-source-host`` name (loop detection)."""
    names: set[str] = set()
    host = global_value(config, "host-name")
    if isinstance(host, str):
        names.add(host.lower().rstrip("."))
    for vmta in config.vmtas.values():
        for source in vmta.source_hosts:
            names.add(source.hostname.lower().rstrip("."))
    return frozenset(names)


def route_settings(
    policy: QueuePolicy,
    *,
    names: frozenset[str] = frozenset(),
    endpoints: Iterable[tuple[str, int]] = (),
) -> RouteSettings:
    """A queue's ``route``, ``smtp-hosts``, ``default-smtp-port`` and fall-back knobs.

    A queue whose domain is an address literal (``u@[192.0.2.1]``, RFC 5321 §4.1.3) is
    routed to that address with no MX look-up, unless a ``route`` says otherwise.
    """
    route = policy.settings.get("route")
    hosts = policy.settings.get("smtp-hosts")
    literal = _address_literal(policy.domain)
    fixed = parse_host_spec(route.text) if route is not None and route.value else None
    if fixed is None and literal is not None:
        fixed = parse_host_spec(f"[{literal}]")
    return RouteSettings(
        default_smtp_port=_int(policy, "default-smtp-port", 25),
        route=fixed,
        smtp_hosts=parse_host_list(hosts.text) if hosts is not None and hosts.value else (),
        log_fallback_failures=_bool(policy, "log-fallback-failures", False),
        bounce_upon_5xx_greeting=_bool(policy, "bounce-upon-5xx-greeting", True),
        local_names=names,
        local_endpoints=frozenset(endpoints),
    )


def _address_literal(domain: str) -> str | None:
    """The IP in ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``, else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def acct_settings(config: Config) -> list[AcctFileSettings]:
    """Every ``<acct-file>`` block → the accounting writer's settings."""
    out: list[AcctFileSettings] = []
    for block in config.acct_files:
        s = block.settings

        records = s.get("records")
        fields: dict[str | RecordType, str | Sequence[str]] = {}
        rf = s.get("record-fields")
        if rf is not None and rf.value is not None:
            items = rf.value if isinstance(rf.value, tuple) else (rf.value,)
            for item in items:
                if isinstance(item, RecordFields):
                    fields[item.record] = ",".join(item.fields)
        layout = AcctLayout.build(
            records.text if records is not None and records.value else "d,b",
            fields or None,
        )
        target = block.path if block.path is not None else f"|{block.command}"
        move = _value(s, "move-interval", None)
        size = _value(s, "max-size", None)
        delete = _value(s, "delete-after", None)
        move_to = _value(s, "move-to", None)
        out.append(
            AcctFileSettings(
                target=target,
                layout=layout,
                move_interval=float(move) if isinstance(move, int) and move else None,
                max_size=int(size) if isinstance(size, int) and size else None,
                delete_after=float(delete) if isinstance(delete, int) and delete else None,
                move_to=str(move_to) if move_to else None,
                world_readable=bool(_value(s, "world-readable", None)),
            )
        )
    return out


def delivery_settings(
    policy: QueuePolicy, *, hostname: str, route: RouteSettings
) -> DeliverySettings:
    """A queue's timeouts and protocol knobs → the delivery edge's settings.

    The source address and EHLO name are filled per connection from the VMTA's
    ``smtp-source-host`` lines (``DeliverySettings.with_source``).
    """
    return DeliverySettings(
        ehlo_hostname=hostname,
        connect_timeout=_seconds(policy, "connect-timeout", 120.0) or 120.0,
        smtp_greeting_timeout=_seconds(policy, "smtp-greeting-timeout", 300.0) or 300.0,
        data_send_timeout=_seconds(policy, "data-send-timeout", 180.0) or 180.0,
        smtp_data_termination_timeout=(
            _seconds(policy, "smtp-data-termination-timeout", 600.0) or 600.0
        ),
        ignore_pipelining=_bool(policy, "ignore-pipelining", False),
        ignore_8bitmime=_bool(policy, "ignore-8bitmime", False),
        ignore_dsn=_bool(policy, "ignore-dsn", False),
        smtp_421_means_mx_unavailable=_bool(policy, "smtp-421-means-mx-unavailable", False),
        assume_delivery_upon_data_termination_timeout=_bool(
            policy, "assume-delivery-upon-data-termination-timeout", False
        ),
        route=route,
    )


def dns_servers(config: Config) -> tuple[list[str] | None, int]:
    """The ``dns-server`` override: nameserver addresses and their port (one port for all).

    None means the system resolver (/etc/resolv.conf).
    """
    setting = config.global_settings.get("dns-server")
    if setting is None or not setting.value:
        return None, 53
    values = setting.value if isinstance(setting.value, tuple) else (setting.value,)
    hosts: list[str] = []
    port = 53
    for value in values:
        if isinstance(value, HostPort):
            hosts.append(value.host)
            port = value.port if value.port is not None else port
    return (hosts or None), port


def known_vmtas(config: Config) -> frozenset[str]:
    """Lower-case names of every VMTA and pool (what ``X-Virtual-MTA`` may name)."""
    return frozenset(n.lower() for n in (*config.vmtas, *config.pools))


def configured_host_name(config: Config, override: str | None = None) -> str | None:
    """``--hostname``, else ``host-name``; None when neither is set (the caller asks the
    machine for its name)."""
    if override:
        return override
    value = global_value(config, "host-name")
    return value if isinstance(value, str) and value else None
