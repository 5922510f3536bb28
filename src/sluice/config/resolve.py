"""Resolution: the effective settings of a queue ``domain/vmta`` and of an injecting source.

Precedence for a queue (most specific first; the first layer that sets a directive wins,
and within one layer the block written later wins):

1. ``<virtual-mta v><domain d>``   2. ``<virtual-mta-pool p><domain d>``   3. ``<domain d>``
4. ``<virtual-mta v><domain *>``   5. ``<virtual-mta-pool p><domain *>``
6. ``<domain *>`` / ``<domain default>``   7. directives directly in ``<virtual-mta v>``
8. directives directly in ``<virtual-mta-pool p>``   9. global directives   10. built-in default.

``p`` ranges over every pool that lists ``v`` as a member, in the order the pools appear in
the file. ``queue-to`` is followed first (a chain ``a → b → c`` ends at the first domain
whose ``queue-to`` is unset or names itself); the target's settings govern the merged queue.
Inline backoff rules come from the most specific ``<domain>`` layer that has any, followed
by the rules of the ``smtp-pattern-list`` the queue's settings name. The VMTA's own
``warmup-plan`` and ``warmup-start`` (``VMTA_QUEUE_SETTINGS``) are listed among each of its
queues' settings too.

Sources: the names passed (``{auth}``, ``{cust1}``; first = strongest) come first, then
address rules from the longest prefix to the shortest (``0/0`` matches IPv4 and IPv6), then
global directives, then defaults.

Public names: ModelView, QueuePolicy, SourcePolicy, QueueTarget, queue_target,
resolve_queue, resolve_source, domain_layers. :func:`resolve_queue` raises
:class:`~sluice.config.errors.UnknownQueueError` for a VMTA the file does not define.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sluice.config.errors import Diagnostic, UnknownQueueError
from sluice.config.model import (
    DEFAULT_VMTA,
    BackoffRule,
    DomainBlock,
    Origin,
    Setting,
    Settings,
    SmtpPatternList,
    SourceRule,
    VirtualMta,
    VmtaPool,
    json_value,
)
from sluice.config.schema import (
    NOT_QUEUE_SETTINGS,
    VMTA_QUEUE_SETTINGS,
    DirectiveSpec,
    DirectiveTable,
)
from sluice.config.values import IPAddress, IPNetwork, format_value

__all__ = [
    "ModelView",
    "QueuePolicy",
    "QueueTarget",
    "SourcePolicy",
    "domain_layers",
    "queue_target",
    "resolve_queue",
    "resolve_source",
]

T = TypeVar("T")


class ModelView(Protocol):
    """What resolution reads from a loaded configuration."""

    @property
    def table(self) -> DirectiveTable: ...
    @property
    def global_settings(self) -> Settings: ...
    @property
    def domains(self) -> tuple[DomainBlock, ...]: ...
    @property
    def vmtas(self) -> Mapping[str, VirtualMta]: ...
    @property
    def pools(self) -> Mapping[str, VmtaPool]: ...
    @property
    def sources(self) -> tuple[SourceRule, ...]: ...
    @property
    def smtp_pattern_lists(self) -> Mapping[str, SmtpPatternList]: ...


def _default_setting(spec: DirectiveSpec) -> Setting:
    text = "" if spec.default_text is None else format_value(spec.kind, spec.default)
    return Setting(name=spec.name, value=spec.default, text=text, origin=None)


class _Typed:
    """Typed access shared by queue and source policies."""

    __slots__ = ()
    settings: Settings

    def setting(self, name: str) -> Setting:
        """The effective setting (raises ``KeyError`` for a directive not in this scope)."""
        return self.settings[name]

    def value(self, name: str) -> object:
        return self.settings[name].value

    def typed(self, name: str, cls: type[T]) -> T:
        """The value, checked to be a ``cls``; raises ``TypeError`` otherwise (None too)."""
        value = self.settings[name].value
        if not isinstance(value, cls):
            raise TypeError(f"{name} is {value!r}, not {cls.__name__}")
        return value

    def optional(self, name: str, cls: type[T]) -> T | None:
        """Like :meth:`typed` but None (unlimited, never, unset) passes through."""
        value = self.settings[name].value
        if value is None:
            return None
        return self.typed(name, cls)


def _settings_json(settings: Settings) -> dict[str, object]:
    return {
        name: {
            "value": json_value(s.value),
            "text": s.text,
            "origin": s.origin_text,
            **({"written_as": s.written_as} if s.written_as else {}),
        }
        for name, s in sorted(settings.items())
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuePolicy(_Typed):
    """The effective settings of one queue; ``queue`` is ``target-domain/vmta``."""

    queue: str
    domain: str
    vmta: str
    requested: str
    queue_to_chain: tuple[str, ...]
    settings: Settings
    backoff_rules: tuple[BackoffRule, ...]

    def as_dict(self) -> dict[str, object]:
        """The stable JSON form printed by ``sluice explain --json`` (docs/config.md)."""
        return {
            "queue": self.queue,
            "domain": self.domain,
            "vmta": self.vmta,
            "requested": self.requested,
            "queue_to_chain": list(self.queue_to_chain),
            "settings": _settings_json(self.settings),
            "backoff_rules": [r.as_dict() for r in self.backoff_rules],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SourcePolicy(_Typed):
    """The effective settings for a client at ``ip`` carrying ``names``; ``matched`` lists the
    ``<source>`` blocks that applied, strongest first."""

    ip: str
    names: tuple[str, ...]
    matched: tuple[str, ...]
    settings: Settings

    def as_dict(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "names": list(self.names),
            "matched": list(self.matched),
            "settings": _settings_json(self.settings),
        }


def _pools_of(view: ModelView, vmta: str) -> list[VmtaPool]:
    return [p for p in view.pools.values() if vmta in p.members]


def domain_layers(view: ModelView, domain: str, vmta: str) -> list[DomainBlock]:
    """The ``<domain>`` blocks that apply to ``domain`` on ``vmta``, strongest first."""
    v = view.vmtas.get(vmta)
    pools = _pools_of(view, vmta)
    own = list(reversed(v.domains)) if v is not None else []
    pooled = [b for p in pools for b in reversed(p.domains)]
    glob = list(reversed(view.domains))
    exact = [b for group in (own, pooled, glob) for b in group if domain in b.names]
    wild = [b for group in (own, pooled, glob) for b in group if b.is_wildcard]
    return exact + wild


def _plain_layers(view: ModelView, vmta: str) -> list[Settings]:
    v = view.vmtas.get(vmta)
    layers: list[Settings] = [v.settings] if v is not None else []
    layers.extend(p.settings for p in _pools_of(view, vmta))
    layers.append(view.global_settings)
    return layers


def _first(name: str, blocks: Sequence[DomainBlock], plain: Sequence[Settings]) -> Setting | None:
    for block in blocks:
        if (s := block.settings.get(name)) is not None:
            return s
    for settings in plain:
        if (s := settings.get(name)) is not None:
            return s
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueTarget:
    """Where ``queue-to`` takes a domain: ``chain`` from the domain asked for to ``target``."""

    target: str
    chain: tuple[str, ...]
    origins: tuple[Origin, ...]
    cycle: bool = False


def queue_target(view: ModelView, domain: str, vmta: str) -> QueueTarget:
    """Follow ``queue-to`` from ``domain`` for ``vmta``; ``cycle`` is True when it loops."""
    chain = [domain]
    origins: list[Origin] = []
    current = domain
    if "queue-to" not in view.table:
        return QueueTarget(target=domain, chain=(domain,), origins=())
    while True:
        s = _first("queue-to", domain_layers(view, current, vmta), ())
        if s is None or not isinstance(s.value, str) or not s.value:
            break
        nxt = s.value.lower()
        if nxt == current:
            break
        if s.origin is not None:
            origins.append(s.origin)
        if nxt in chain:
            chain.append(nxt)
            return QueueTarget(target=nxt, chain=tuple(chain), origins=tuple(origins), cycle=True)
        chain.append(nxt)
        current = nxt
    return QueueTarget(target=current, chain=tuple(chain), origins=tuple(origins))


def _unknown(message: str) -> UnknownQueueError:
    return UnknownQueueError(
        [Diagnostic(file="<query>", line=0, directive="queue", message=message)]
    )


def resolve_queue(view: ModelView, domain: str, vmta: str | None = None) -> QueuePolicy:
    """The effective settings of the queue for ``domain`` on ``vmta`` (None = ``{default}``)."""
    domain = domain.strip().lower()
    vmta = DEFAULT_VMTA if vmta in (None, "", DEFAULT_VMTA) else vmta
    assert vmta is not None
    if vmta != DEFAULT_VMTA and vmta not in view.vmtas:
        if vmta in view.pools:
            raise _unknown(f"{vmta} is a virtual-mta-pool; a queue belongs to one of its members")
        raise _unknown(f"no virtual-mta named {vmta!r}")
    target = queue_target(view, domain, vmta)
    if target.cycle:
        raise _unknown("queue-to loops: " + " -> ".join(target.chain))
    blocks = domain_layers(view, target.target, vmta)
    plain = _plain_layers(view, vmta)
    settings: dict[str, Setting] = {}
    own = view.vmtas.get(vmta)
    for spec in view.table:
        if spec.name in VMTA_QUEUE_SETTINGS:
            s = own.settings.get(spec.name) if own is not None else None
            settings[spec.name] = s if s is not None else _default_setting(spec)
            continue
        if "domain" not in spec.scopes or spec.name in NOT_QUEUE_SETTINGS:
            continue
        s = _first(spec.name, blocks, plain)
        settings[spec.name] = s if s is not None else _default_setting(spec)
    rules: list[BackoffRule] = []
    for block in blocks:
        if block.backoff_rules:
            rules.extend(block.backoff_rules)
            break
    plist = settings.get("smtp-pattern-list")
    if plist is not None and isinstance(plist.value, str):
        found = view.smtp_pattern_lists.get(plist.value)
        if found is not None:
            rules.extend(found.rules)
    return QueuePolicy(
        queue=f"{target.target}/{vmta}",
        domain=target.target,
        vmta=vmta,
        requested=f"{domain}/{vmta}",
        queue_to_chain=target.chain,
        settings=settings,
        backoff_rules=tuple(rules),
    )


def _contains(network: IPNetwork, addr: IPAddress) -> bool:
    if network.prefixlen == 0:
        return True
    return network.version == addr.version and addr in network


def resolve_source(view: ModelView, ip: str, names: Iterable[str] = ()) -> SourcePolicy:
    """Effective ``<source>`` settings for a client at ``ip`` (raises ValueError if not an IP)."""
    addr: IPAddress = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    names = tuple(names)
    layers: list[SourceRule] = []
    for name in names:
        layers.extend(r for r in reversed(view.sources) if r.label == name)
    indexed = [
        (i, r)
        for i, r in enumerate(view.sources)
        if r.network is not None and _contains(r.network, addr)
    ]
    indexed.sort(key=lambda pair: (pair[1].network.prefixlen if pair[1].network else 0, pair[0]))
    layers.extend(r for _, r in reversed(indexed))
    settings: dict[str, Setting] = {}
    for spec in view.table:
        if "source" not in spec.scopes or spec.name in NOT_QUEUE_SETTINGS:
            continue
        found = None
        for rule in layers:
            if (found := rule.settings.get(spec.name)) is not None:
                break
        if found is None:
            found = view.global_settings.get(spec.name)
        settings[spec.name] = found if found is not None else _default_setting(spec)
    return SourcePolicy(
        ip=str(addr),
        names=names,
        matched=tuple(r.match_text for r in layers),
        settings=settings,
    )
