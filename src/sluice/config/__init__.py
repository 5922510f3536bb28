"""PowerMTA-format configuration → a frozen, typed, resolved model (pure: no file I/O here).

Load with :func:`load_config` (file access injected) or :func:`load_config_text`; both raise
:class:`ConfigError` holding every error (and warning) as ``file:line: directive: message``,
or return a :class:`Config` whose ``warnings`` lists what is legal but suspicious. Ask the
config for a queue's effective settings with ``Config.queue_policy(domain, vmta)`` or
``Config.policy_for("domain/vmta")``, and for an injecting client's with
``Config.source_for(ip, names)``. docs/config.md describes the language and the precedence.

Public names: load_config, load_config_text, Config, HttpSettings, QueuePolicy, SourcePolicy,
Setting, Origin, BackoffRule, WarmupPlanDef, DEFAULT_VMTA, ConfigError, UnknownQueueError,
Diagnostic, Severity, DirectiveTable, DirectiveSpec, default_table, parse_queue_name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sluice.config._checks import check
from sluice.config._config import Config, HttpSettings, parse_queue_name
from sluice.config._loader import Loader
from sluice.config.errors import ConfigError, Diagnostic, Severity, UnknownQueueError
from sluice.config.model import DEFAULT_VMTA, BackoffRule, Origin, Setting, WarmupPlanDef
from sluice.config.resolve import QueuePolicy, SourcePolicy
from sluice.config.schema import DirectiveSpec, DirectiveTable, default_table

__all__ = [
    "DEFAULT_VMTA",
    "BackoffRule",
    "Config",
    "ConfigError",
    "Diagnostic",
    "DirectiveSpec",
    "DirectiveTable",
    "HttpSettings",
    "Origin",
    "QueuePolicy",
    "Setting",
    "Severity",
    "SourcePolicy",
    "UnknownQueueError",
    "WarmupPlanDef",
    "default_table",
    "load_config",
    "load_config_text",
    "parse_queue_name",
]


def _no_files(path: str) -> str:
    raise FileNotFoundError(path)


def _no_glob(pattern: str) -> list[str]:
    return []


def _finish(loader: Loader, config: Config) -> Config:
    diags = loader.diags + check(config, loader.member_lines)
    order = {name: i for i, name in enumerate(config.files)}
    diags.sort(key=lambda d: (order.get(d.file, len(order)), d.line))
    if any(d.severity is Severity.ERROR for d in diags):
        raise ConfigError(diags)
    return replace(config, warnings=tuple(diags))


def load_config(
    path: str,
    *,
    read_text: Callable[[str], str],
    glob: Callable[[str], list[str]] = _no_glob,
    table: DirectiveTable | None = None,
) -> Config:
    """Load the file at ``path``; ``read_text`` raises ``OSError`` for a missing file."""
    loader = Loader(table or default_table(), read_text, glob)
    return _finish(loader, loader.load(path))


def load_config_text(
    text: str,
    name: str = "<string>",
    *,
    read_text: Callable[[str], str] = _no_files,
    glob: Callable[[str], list[str]] = _no_glob,
    table: DirectiveTable | None = None,
) -> Config:
    """Load configuration ``text`` (named ``name`` in diagnostics)."""
    loader = Loader(table or default_table(), read_text, glob)
    return _finish(loader, loader.load_text(text, name))
