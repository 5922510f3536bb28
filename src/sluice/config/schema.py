"""The directive table: the data rows of ``_directive_data`` validated into lookup-able specs.

Each row becomes a :class:`DirectiveSpec` whose kind is known, whose scopes come from the
fixed vocabulary and whose default parses under its kind. :func:`default_table` builds the
table once; :meth:`DirectiveTable.lookup` finds a directive by name or alias and
:meth:`DirectiveTable.nearest` suggests the closest known name for a typo.

Public names: EQUIVALENTS, NOT_QUEUE_SETTINGS, VMTA_QUEUE_SETTINGS, SCOPES, DirectiveSpec,
DirectiveTable, SchemaError, validate_rows, default_table. ``DirectiveTable.from_rows`` and
``default_table`` raise :class:`SchemaError` when a row is invalid (a bug in the table, not in
a user's file).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from sluice.config._directive_data import DIRECTIVE_ROWS
from sluice.config.values import ValueFormError, kind_is_known, parse_value

__all__ = [
    "EQUIVALENTS",
    "NOT_QUEUE_SETTINGS",
    "SCOPES",
    "VMTA_QUEUE_SETTINGS",
    "DirectiveSpec",
    "DirectiveTable",
    "SchemaError",
    "default_table",
    "validate_rows",
]

#: Every scope word a row may name; ``domain`` is any ``<domain>`` block, global or nested.
SCOPES: frozenset[str] = frozenset(
    {
        "global",
        "domain",
        "virtual-mta",
        "virtual-mta-pool",
        "source",
        "smtp-user",
        "acct-file",
        "spool",
        "bounce-processor",
        "feedback-loop-processor",
        "address-list",
        "signals",
        "rewrite-list",
        "smtp-listener",
        "warmup-plan",
    }
)

#: Which part of Sluice acts on a directive ("parsed" = carried in the model only).
IMPLEMENTED_BY: frozenset[str] = frozenset(
    {
        "config",
        "intake",
        "delivery",
        "shaping",
        "tls",
        "dkim",
        "mgmt",
        "bounce",
        "acct",
        "spool",
        "routing",
        "sched",
        "daemon",
        "parsed",
    }
)


def _per_hour(text: str) -> str:
    return "unlimited" if text in ("0", "unlimited") else f"{text}/h"


def _same(text: str) -> str:
    return text


#: Seed-dialect directive → (canonical directive, conversion of its canonical value text).
#: The loader stores such a line under the canonical name (DESIGN §3).
EQUIVALENTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "max-msg-per-hour": ("max-msg-rate", _per_hour),
    "backoff-max-msg-per-hour": ("backoff-max-msg-rate", _per_hour),
    "retry-interval": ("retry-after", _same),
    "max-retry-time": ("bounce-after", _same),
}

#: Directives that structure the file rather than set anything, and seed forms stored under
#: their canonical names: never listed among a queue's or a source's effective settings.
NOT_QUEUE_SETTINGS: frozenset[str] = frozenset(
    {"include", "domain-macro", "virtual-mta", *EQUIVALENTS}
)

#: Directives written only in a ``<virtual-mta>`` that still belong to each of its queues'
#: effective settings (``sluice explain hotmail.com/ip21`` shows the VMTA's warm-up plan);
#: they are taken from the queue's VMTA alone, never from domains, pools or the top level.
VMTA_QUEUE_SETTINGS: frozenset[str] = frozenset({"warmup-plan", "warmup-start"})


class SchemaError(ValueError):
    """A row of the directive table is invalid (a programming error in the table)."""


class Row(Protocol):
    """The shape of a ``_directive_data.DirectiveRow``."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def scopes(self) -> str: ...
    @property
    def default(self) -> str | None: ...
    @property
    def description(self) -> str: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...
    @property
    def reload_safe(self) -> bool: ...
    @property
    def repeatable(self) -> bool: ...
    @property
    def implemented(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectiveSpec:
    """One validated directive: how to parse it, where it may appear, its default."""

    name: str
    kind: str
    scopes: frozenset[str]
    default_text: str | None
    default: object
    description: str
    aliases: tuple[str, ...] = ()
    reload_safe: bool = True
    repeatable: bool = False
    implemented: str = "parsed"

    @property
    def has_default(self) -> bool:
        return self.default_text is not None

    def allowed_in(self, scope: str) -> bool:
        return scope in self.scopes


def _check_row(row: Row) -> tuple[DirectiveSpec | None, list[str]]:
    problems: list[str] = []
    where = f"directive row {row.name!r}"
    if not row.name or row.name != row.name.strip().lower() or " " in row.name:
        problems.append(f"{where}: name must be lower-case without spaces")
    if not kind_is_known(row.kind):
        problems.append(f"{where}: unknown kind {row.kind!r}")
    scopes = frozenset(row.scopes.split())
    if not scopes:
        problems.append(f"{where}: no scopes")
    if unknown := scopes - SCOPES:
        problems.append(f"{where}: unknown scopes {sorted(unknown)}")
    if row.implemented not in IMPLEMENTED_BY:
        problems.append(f"{where}: unknown implemented-by {row.implemented!r}")
    if not row.description.strip():
        problems.append(f"{where}: empty description")
    default: object = None
    if row.default is not None and kind_is_known(row.kind):
        try:
            default = parse_value(row.kind, row.default)
        except ValueFormError as exc:
            problems.append(f"{where}: default {row.default!r} does not parse: {exc}")
    if problems:
        return None, problems
    spec = DirectiveSpec(
        name=row.name,
        kind=row.kind,
        scopes=scopes,
        default_text=row.default,
        default=default,
        description=row.description,
        aliases=tuple(row.aliases),
        reload_safe=row.reload_safe,
        repeatable=row.repeatable,
        implemented=row.implemented,
    )
    return spec, []


def validate_rows(rows: Iterable[Row]) -> list[str]:
    """Every problem with ``rows`` (empty when the table is sound)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for row in rows:
        problems.extend(_check_row(row)[1])
        for name in (row.name, *row.aliases):
            if name in seen:
                problems.append(
                    f"directive row {row.name!r}: {name!r} already used by {seen[name]!r}"
                )
            seen[name] = row.name
    return problems


class DirectiveTable:
    """Validated directive specs, looked up by canonical name or alias."""

    __slots__ = ("_by_name", "_canonical")

    def __init__(self, specs: Sequence[DirectiveSpec]) -> None:
        by_name: dict[str, DirectiveSpec] = {}
        for spec in specs:
            by_name[spec.name] = spec
            for alias in spec.aliases:
                by_name.setdefault(alias, spec)
        self._by_name = MappingProxyType(by_name)
        self._canonical = tuple(specs)

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> DirectiveTable:
        rows = tuple(rows)
        problems = validate_rows(rows)
        if problems:
            raise SchemaError("; ".join(problems))
        specs = [spec for spec, _ in map(_check_row, rows) if spec is not None]
        return cls(specs)

    def lookup(self, name: str) -> DirectiveSpec | None:
        return self._by_name.get(name.lower())

    def __getitem__(self, name: str) -> DirectiveSpec:
        spec = self.lookup(name)
        if spec is None:
            raise KeyError(name)
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[DirectiveSpec]:
        return iter(self._canonical)

    def __len__(self) -> int:
        return len(self._canonical)

    def nearest(self, name: str) -> str | None:
        """The known directive (or alias) closest to ``name``, or None if none is close."""
        match = difflib.get_close_matches(name.lower(), list(self._by_name), n=1, cutoff=0.6)
        return match[0] if match else None

    def in_scope(self, scope: str) -> tuple[DirectiveSpec, ...]:
        return tuple(s for s in self._canonical if scope in s.scopes)


@functools.cache
def default_table() -> DirectiveTable:
    """The table built from ``sluice.config._directive_data`` (built once)."""
    return DirectiveTable.from_rows(DIRECTIVE_ROWS)
