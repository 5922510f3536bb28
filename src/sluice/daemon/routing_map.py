"""Which queue each recipient of a message goes to: VMTA or pool choice, then ``queue-to``.

A message names a virtual MTA, a pool, or nothing (the default VMTA, ``{default}``). A pool
is resolved to one member per message by smooth weighted round robin
(:class:`sluice.routing.PoolChooser`, docs/routing.md); each recipient's domain then maps to
its queue ``domain/vmta`` through the configuration (``queue-to`` applied). Mapping results
are memoised: a bulk campaign has few distinct (domain, vmta) pairs.

Public names: QueueRouter.
"""

from __future__ import annotations

from sluice.config import DEFAULT_VMTA, Config
from sluice.message import Envelope
from sluice.routing import PoolChooser, PoolMember
from sluice.sched.warmup import COLD_SUFFIX, ColdVmtaRouter

__all__ = ["QueueRouter"]

#: Memo entries kept before the (domain, vmta) → queue memo starts over.
_MEMO_LIMIT = 100_000


class QueueRouter:
    """Maps recipients to queue names for one configuration."""

    __slots__ = ("_choosers", "_cold", "_cold_limits", "_config", "_memo", "_vmtas")

    def __init__(self, config: Config) -> None:
        self._config = config
        self._vmtas = {name.lower(): name for name in config.vmtas}
        self._choosers = {
            name.lower(): PoolChooser(name, [PoolMember(vmta=m) for m in pool.members])
            for name, pool in config.pools.items()
            if pool.members
        }
        self._memo: dict[tuple[str, str], str] = {}
        self._cold_limits: dict[tuple[str, str], int] = {}
        self._cold = ColdVmtaRouter(self._cold_limit, lambda name: name in config.vmtas)

    def vmta_for(self, requested: str | None) -> str:
        """The VMTA a message uses: a pool picks a member, unknown or None → ``{default}``."""
        if not requested:
            return DEFAULT_VMTA
        key = requested.lower()
        chooser = self._choosers.get(key)
        if chooser is not None:
            member = chooser.choose()
            return member if member is not None else DEFAULT_VMTA
        return self._vmtas.get(key, DEFAULT_VMTA)

    def queue_name(self, domain: str, vmta: str) -> str:
        key = (domain, vmta)
        name = self._memo.get(key)
        if name is None:
            name = self._config.queue_name(domain, None if vmta == DEFAULT_VMTA else vmta)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = name
        return name

    def _cold_limit(self, vmta: str, domain: str) -> int:
        key = (vmta, domain)
        limit = self._cold_limits.get(key)
        if limit is None:
            value = self._config.queue_policy(domain, vmta).value("max-cold-virtual-mta-msg")
            limit = value if isinstance(value, int) else 0
            if len(self._cold_limits) >= _MEMO_LIMIT:
                self._cold_limits.clear()
            self._cold_limits[key] = limit
        return limit

    def queues_of(
        self, envelope: Envelope, vmta: str, now: float | None = None
    ) -> dict[str, list[int]]:
        """Recipient indexes of ``envelope`` grouped by queue, for VMTA ``vmta``.

        With ``now`` (new mail over SMTP, not recovery), PowerMTA's cold-VMTA rule applies:
        while ``VMTA-cold`` exists and ``max-cold-virtual-mta-msg`` allows, the first N
        messages per recipient domain per day go through ``VMTA-cold`` instead.
        """
        out: dict[str, list[int]] = {}
        chosen: dict[str, str] = {}
        cold_exists = now is not None and (vmta + COLD_SUFFIX) in self._config.vmtas
        for index, rcpt in enumerate(envelope.recipients):
            address = rcpt.address
            at = address.rfind("@")
            domain = address[at + 1 :].lower().rstrip(".") if at >= 0 else ""
            use = vmta
            if cold_exists and now is not None:
                use = chosen.get(domain) or chosen.setdefault(
                    domain, self._cold.route(vmta, domain, now)
                )
            out.setdefault(self.queue_name(domain, use), []).append(index)
        return out
