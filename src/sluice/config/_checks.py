"""Whole-file checks run after loading: references, pools, queue-to loops, warnings.

Errors: a pool naming an unknown VMTA, a reference to an unknown pattern list, rewrite list or
VMTA, a ``queue-to`` loop. Warnings: ``dkim-sign yes`` with no ``domain-key`` to sign with,
``use-starttls yes`` with ``require-starttls no`` (plaintext fallback), an empty pool, an
``<smtp-user>`` bound to a ``{name}`` no ``<source>`` defines. The warm-up plan checks
(errors and warnings) live in :mod:`sluice.config._warmup`.

Public names: check. It never raises; it returns diagnostics.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping

from sluice.config._config import Config
from sluice.config._warmup import check_warmup
from sluice.config.errors import Diagnostic, Severity
from sluice.config.model import DEFAULT_VMTA, DomainBlock, Origin, Setting, Settings
from sluice.config.resolve import queue_target
from sluice.config.values import DomainKey

__all__ = ["check"]

_VMTA_REFS = ("default-virtual-mta", "reroute-to-virtual-mta", "backoff-reroute-to-virtual-mta")


def _diag(
    origin: Origin | None, directive: str, message: str, *, warning: bool = False
) -> Diagnostic:
    return Diagnostic(
        file=origin.file if origin else "<config>",
        line=origin.line if origin else 0,
        directive=directive,
        message=message,
        severity=Severity.WARNING if warning else Severity.ERROR,
    )


def _all_settings(config: Config) -> Iterator[tuple[str | None, Settings]]:
    """Every block's settings, with the VMTA (or pool) it belongs to, if any."""
    yield None, config.global_settings
    for block in config.domains:
        yield None, block.settings
    for vmta in config.vmtas.values():
        yield vmta.name, vmta.settings
        for block in vmta.domains:
            yield vmta.name, block.settings
    for pool in config.pools.values():
        yield pool.name, pool.settings
        for block in pool.domains:
            yield pool.name, block.settings
    for group in (
        config.sources,
        config.smtp_users.values(),
        config.acct_files,
        config.spools,
        config.bounce_processors,
        config.feedback_loop_processors,
        config.signals,
        config.listeners,
    ):
        for item in group:
            yield None, item.settings


def _near(name: str, known: Mapping[str, object]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {match[0]}?" if match else ""


def _check_pools(
    config: Config, member_lines: Mapping[str, list[tuple[str, Origin]]]
) -> Iterator[Diagnostic]:
    for pool in config.pools.values():
        lines = member_lines.get(pool.name, [])
        if not lines:
            yield _diag(
                pool.origin, "virtual-mta-pool", f"pool {pool.name} has no members", warning=True
            )
        for member, origin in lines:
            if member in config.pools:
                yield _diag(origin, "virtual-mta", f"{member} is a pool; a pool lists virtual MTAs")
            elif member not in config.vmtas:
                yield _diag(
                    origin,
                    "virtual-mta",
                    f"pool {pool.name} names unknown virtual-mta {member!r}"
                    + _near(member, config.vmtas),
                )


def _check_references(config: Config) -> Iterator[Diagnostic]:
    targets: dict[str, tuple[str, Mapping[str, object]]] = {
        "smtp-pattern-list": ("smtp-pattern-list", config.smtp_pattern_lists),
        "pattern-list": ("pattern-list", config.pattern_lists),
        "rewrite-list": ("rewrite-list", config.rewrite_lists),
    }
    vmtas_and_pools = {**config.vmtas, **config.pools}
    for name in _VMTA_REFS:
        targets[name] = ("virtual-mta or pool", vmtas_and_pools)
    for _, settings in _all_settings(config):
        for name, (what, known) in targets.items():
            s = settings.get(name)
            if s is not None and isinstance(s.value, str) and s.value and s.value not in known:
                yield _diag(s.origin, name, f"unknown {what} {s.value!r}" + _near(s.value, known))
    for plist in config.pattern_lists.values():
        for rule in plist.rules:
            vmta = rule.virtual_mta
            if vmta is not None and vmta not in vmtas_and_pools:
                yield _diag(rule.origin, rule.field, f"unknown virtual-mta or pool {vmta!r}")
    labels = {r.label for r in config.sources if r.label is not None}
    for user in config.smtp_users.values():
        s = user.settings.get("source")
        if s is not None and isinstance(s.value, str) and s.value not in labels:
            yield _diag(s.origin, "source", f"no <source {s.value}> block defines it", warning=True)


def _check_queue_to(config: Config) -> Iterator[Diagnostic]:
    seen: set[frozenset[str]] = set()
    for vmta in (DEFAULT_VMTA, *config.vmtas):
        for domain in config.domain_names():
            target = queue_target(config, domain, vmta)
            if not target.cycle:
                continue
            loop = target.chain[target.chain.index(target.chain[-1]) :]
            key = frozenset(loop)
            if key in seen:
                continue
            seen.add(key)
            origin = target.origins[-1] if target.origins else None
            yield _diag(origin, "queue-to", "queue-to loops: " + " -> ".join(loop))


def _domain_keys(settings: Settings) -> list[DomainKey]:
    s = settings.get("domain-key")
    if s is None:
        return []
    values = s.value if isinstance(s.value, tuple) else (s.value,)
    return [v for v in values if isinstance(v, DomainKey)]


def _signs(s: Setting | None) -> bool:
    return s is not None and s.value in (True, "yes", "true")


def _check_dkim(config: Config) -> Iterator[Diagnostic]:
    global_keys = _domain_keys(config.global_settings)
    keys_of: dict[str, list[DomainKey]] = {
        v.name: _domain_keys(v.settings) for v in config.vmtas.values()
    }
    for pool in config.pools.values():
        keys_of[pool.name] = [k for m in pool.members for k in keys_of.get(m, [])]
    any_vmta_keys = any(keys_of.values())
    for owner, settings in _all_settings(config):
        s = settings.get("dkim-sign")
        if not _signs(s):
            continue
        keys = global_keys + (keys_of.get(owner, []) if owner else [])
        if not keys and not (owner is None and any_vmta_keys):
            assert s is not None
            yield _diag(
                s.origin,
                "dkim-sign",
                "dkim-sign is on but no domain-key is configured to sign with; "
                "mail will leave unsigned",
                warning=True,
            )


def _check_starttls(config: Config) -> Iterator[Diagnostic]:
    for _, settings in _all_settings(config):
        use, require = settings.get("use-starttls"), settings.get("require-starttls")
        if use is not None and use.value is True and require is not None and require.value is False:
            yield _diag(
                require.origin,
                "require-starttls",
                "with use-starttls yes, require-starttls no means mail falls back to "
                "plaintext when the remote host offers no TLS",
                warning=True,
            )


def _check_domains(blocks: tuple[DomainBlock, ...]) -> Iterator[Diagnostic]:
    for block in blocks:
        if block.container is None and not block.names:
            yield _diag(block.origin, "domain", "block names no domain", warning=True)


def check(config: Config, member_lines: Mapping[str, list[tuple[str, Origin]]]) -> list[Diagnostic]:
    """Every whole-file problem of ``config``, errors and warnings."""
    out: list[Diagnostic] = []
    out.extend(_check_pools(config, member_lines))
    out.extend(_check_references(config))
    out.extend(_check_queue_to(config))
    out.extend(_check_dkim(config))
    out.extend(_check_starttls(config))
    out.extend(_check_domains(config.domains))
    out.extend(check_warmup(config))
    return out
