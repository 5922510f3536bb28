"""The directive table: every row valid, lookup by alias, nearest-name suggestions."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from sluice.config import load_config_text
from sluice.config._directive_data import DIRECTIVE_ROWS
from sluice.config.schema import (
    EQUIVALENTS,
    DirectiveTable,
    SchemaError,
    default_table,
    validate_rows,
)
from sluice.config.values import format_value, parse_value


class Row(NamedTuple):
    name: str
    kind: str
    scopes: str
    default: str | None
    description: str
    aliases: tuple[str, ...] = ()
    reload_safe: bool = True
    repeatable: bool = False
    implemented: str = "parsed"


def test_every_row_of_the_real_table_is_valid() -> None:
    assert validate_rows(DIRECTIVE_ROWS) == []
    table = default_table()
    assert len(table) == len(DIRECTIVE_ROWS)


def test_every_default_round_trips_through_its_kind() -> None:
    for spec in default_table():
        if spec.default_text is not None:
            text = format_value(spec.kind, spec.default)
            assert parse_value(spec.kind, text) == spec.default, spec.name


def test_seed_dialect_rows_and_their_canonical_targets_exist() -> None:
    table = default_table()
    for seed_name in (
        "retry-interval", "max-retry-time", "min-retry-interval", "max-msg-per-hour",
        "bounce-on-4xx-status", "log-delivery-failures", "log-fallback-failures", "max-cpu-usage",
    ):  # fmt: skip
        assert seed_name in table
    for seed_name, (canonical, _) in EQUIVALENTS.items():
        if seed_name in table:
            assert canonical in table


def test_invalid_rows_are_all_reported() -> None:
    rows = [
        Row("good", "int", "global", "5", "fine"),
        Row("bad-kind", "float", "global", None, "x"),
        Row("bad-scope", "int", "galaxy", None, "x"),
        Row("bad-default", "duration", "domain", "soon", "x"),
        Row("good", "int", "global", None, "duplicate name"),
    ]
    problems = validate_rows(rows)
    assert len(problems) == 4
    with pytest.raises(SchemaError, match="bad-kind"):
        DirectiveTable.from_rows(rows)


def test_lookup_alias_and_nearest() -> None:
    table = DirectiveTable.from_rows(
        [
            Row("max-smtp-out", "int", "global domain", "20", "connections"),
            Row(
                "max-rcpt-per-message",
                "int",
                "domain",
                "0",
                "r",
                aliases=("max-rcpt-per-transaction",),
            ),
        ]
    )
    assert table["max-rcpt-per-transaction"].name == "max-rcpt-per-message"
    assert table.lookup("MAX-SMTP-OUT") is not None
    assert table.nearest("max-smtp-outt") == "max-smtp-out"
    assert table.nearest("zzzz") is None
    config = load_config_text("<domain x.com>\n max-rcpt-per-transaction 5\n</domain>", table=table)
    setting = config.queue_policy("x.com").setting("max-rcpt-per-message")
    assert (setting.value, setting.written_as) == (5, "max-rcpt-per-transaction")
