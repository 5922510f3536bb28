"""The loaded configuration: every block of the file, and the queries later parts ask of it.

Public names: Config, HttpSettings, parse_queue_name. ``Config.queue_policy`` and
``Config.policy_for`` raise :class:`~sluice.config.errors.UnknownQueueError` for an unknown
VMTA; ``Config.vmta`` / ``Config.pool`` raise ``KeyError``; ``Config.source_for`` raises
``ValueError`` for a malformed IP address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from sluice.config.errors import Diagnostic
from sluice.config.model import (
    DEFAULT_VMTA,
    AcctFile,
    CategoryPattern,
    DomainBlock,
    InboundPatternList,
    Listener,
    Processor,
    RewriteList,
    Setting,
    Settings,
    SignalsBlock,
    SmtpPatternList,
    SmtpUser,
    SourceRule,
    SpoolDir,
    VirtualMta,
    VmtaPool,
    WarmupPlanDef,
)
from sluice.config.resolve import (
    QueuePolicy,
    QueueTarget,
    SourcePolicy,
    queue_target,
    resolve_queue,
    resolve_source,
)
from sluice.config.schema import DirectiveTable
from sluice.config.values import HttpAccess, format_value

__all__ = ["Config", "HttpSettings", "parse_queue_name"]


def parse_queue_name(queue: str) -> tuple[str, str]:
    """``domain/vmta`` → (domain, vmta); ``domain`` alone → (domain, ``{default}``)."""
    domain, _, vmta = queue.strip().partition("/")
    return domain.lower(), (vmta or DEFAULT_VMTA)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    """The management interface: ``http-mgmt-port`` (None = off) and ``http-access`` rules."""

    port: int | None
    access: tuple[HttpAccess, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A loaded, validated configuration (see docs/config.md)."""

    file: str
    files: tuple[str, ...]
    table: DirectiveTable
    global_settings: Settings
    domains: tuple[DomainBlock, ...]
    vmtas: Mapping[str, VirtualMta]
    pools: Mapping[str, VmtaPool]
    sources: tuple[SourceRule, ...]
    smtp_users: Mapping[str, SmtpUser]
    smtp_pattern_lists: Mapping[str, SmtpPatternList]
    pattern_lists: Mapping[str, InboundPatternList]
    bounce_category_patterns: tuple[CategoryPattern, ...]
    acct_files: tuple[AcctFile, ...]
    spools: tuple[SpoolDir, ...]
    rewrite_lists: Mapping[str, RewriteList]
    bounce_processors: tuple[Processor, ...]
    feedback_loop_processors: tuple[Processor, ...]
    signals: tuple[SignalsBlock, ...]
    listeners: tuple[Listener, ...]
    macros: Mapping[str, tuple[str, ...]]
    warnings: tuple[Diagnostic, ...] = ()
    #: ``<warmup-plan NAME>`` blocks (a Sluice extension, docs/shaping.md §6).
    warmup_plans: Mapping[str, WarmupPlanDef] = field(default_factory=lambda: MappingProxyType({}))
    _cache: dict[tuple[str, str], QueuePolicy | frozenset[str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    # ------------------------------------------------------------ names

    def vmta(self, name: str) -> VirtualMta:
        return self.vmtas[name]

    def pool(self, name: str) -> VmtaPool:
        return self.pools[name]

    def domain_names(self) -> tuple[str, ...]:
        """Every domain named in any ``<domain>`` block (not ``*``), sorted."""
        blocks = [*self.domains]
        for vmta in self.vmtas.values():
            blocks.extend(vmta.domains)
        for pool in self.pools.values():
            blocks.extend(pool.domains)
        return tuple(sorted({n for b in blocks for n in b.names if n != "*"}))

    def warmup_of(self, vmta: str) -> tuple[WarmupPlanDef, Setting] | None:
        """The warm-up plan of VMTA ``vmta`` and its ``warmup-start`` setting (whose value
        is a ``datetime.date``), or None when the VMTA has no plan (or is unknown)."""
        v = self.vmtas.get(vmta)
        if v is None:
            return None
        plan, start = v.settings.get("warmup-plan"), v.settings.get("warmup-start")
        if plan is None or start is None or not isinstance(plan.value, str):
            return None
        found = self.warmup_plans.get(plan.value)
        return None if found is None or start.value is None else (found, start)

    def warmup_users(self) -> dict[str, tuple[str, ...]]:
        """Plan name → the VMTAs warmed up by it, in file order (every plan is a key)."""
        out: dict[str, list[str]] = {name: [] for name in self.warmup_plans}
        for name in self.vmtas:
            found = self.warmup_of(name)
            if found is not None:
                out[found[0].name].append(name)
        return {plan: tuple(vmtas) for plan, vmtas in out.items()}

    # ------------------------------------------------------------ global settings

    def setting(self, name: str) -> Setting:
        """A global directive's effective setting (written or default); KeyError if unknown."""
        spec = self.table[name]
        found = self.global_settings.get(spec.name)
        if found is not None:
            return found
        text = "" if spec.default_text is None else format_value(spec.kind, spec.default)
        return Setting(name=spec.name, value=spec.default, text=text, origin=None)

    def value(self, name: str) -> object:
        return self.setting(name).value

    @property
    def http(self) -> HttpSettings:
        port = self.global_settings.get("http-mgmt-port")
        access = self.global_settings.get("http-access")
        rules = access.value if access is not None and isinstance(access.value, tuple) else ()
        return HttpSettings(
            port=port.value if port is not None and isinstance(port.value, int) else None,
            access=tuple(r for r in rules if isinstance(r, HttpAccess)),
        )

    # ------------------------------------------------------------ queues and sources

    def queue_target(self, domain: str, vmta: str | None = None) -> QueueTarget:
        return queue_target(self, domain.lower(), vmta or DEFAULT_VMTA)

    def queue_name(self, domain: str, vmta: str | None = None) -> str:
        """The queue a recipient domain's mail goes to: ``target/vmta`` after ``queue-to``."""
        return self.queue_policy(domain, vmta).queue

    def queue_policy(self, domain: str, vmta: str | None = None) -> QueuePolicy:
        """Effective settings of the queue for ``domain`` on ``vmta`` (None = ``{default}``).

        Domains that no ``<domain>`` block names share one resolved settings mapping per
        VMTA (the ``*`` layers), so a million distinct recipient domains cost no more
        memory than one.
        """
        key = (domain.strip().lower(), vmta or DEFAULT_VMTA)
        cached = self._cache.get(key)
        if isinstance(cached, QueuePolicy):
            return cached
        if key[0] in self._named_domains():
            policy = resolve_queue(self, key[0], key[1])
            self._cache[key] = policy
            return policy
        base_key = ("*", key[1])
        base = self._cache.get(base_key)
        if not isinstance(base, QueuePolicy):
            base = resolve_queue(self, "*", key[1])
            self._cache[base_key] = base
        requested = f"{key[0]}/{base.vmta}"
        if base.domain != "*":  # <domain *> queue-to X: every other domain merges into X
            chain = (key[0], *base.queue_to_chain[1:])
            return replace(base, requested=requested, queue_to_chain=chain)
        return replace(
            base,
            queue=f"{key[0]}/{base.vmta}",
            domain=key[0],
            requested=requested,
            queue_to_chain=(key[0],),
        )

    def _named_domains(self) -> frozenset[str]:
        names = self._cache.get(("", ""))
        if names is None:
            known = frozenset(self.domain_names())
            self._cache[("", "")] = known
            return known
        assert isinstance(names, frozenset)
        return names

    def policy_for(self, queue: str) -> QueuePolicy:
        """Like :meth:`queue_policy` for a queue name ``domain/vmta`` or ``domain``."""
        return self.queue_policy(*parse_queue_name(queue))

    def source_for(self, ip: str, names: Iterable[str] = ()) -> SourcePolicy:
        """Effective ``<source>`` settings for a client at ``ip`` with source ``names``."""
        return resolve_source(self, ip, names)

    def queue_map(self) -> dict[str, dict[str, str]]:
        """For each VMTA (and ``{default}``), the domains whose queue is another name."""
        out: dict[str, dict[str, str]] = {}
        for vmta in (DEFAULT_VMTA, *self.vmtas):
            moved = {}
            for name in self.domain_names():
                target = queue_target(self, name, vmta)
                if target.target != name and not target.cycle:
                    moved[name] = target.target
            out[vmta] = moved
        return out
