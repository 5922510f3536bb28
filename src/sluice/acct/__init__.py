"""sluice.acct: accounting records in PowerMTA's CSV format (pure) and their files (edge).

``records`` is pure (types, fields, layouts, CSV rows); ``writer`` is the one module that
touches files and processes (``<acct-file PATH>`` with rotation, ``<acct-file |command>``).
The writer is not imported here, so importing ``sluice.acct`` stays free of I/O modules.
See docs/accounting.md.

Public names (from records): AcctRecord, RecordType, AcctLayout, DEFAULT_FIELDS,
FEEDBACK_FIELDS, DEFAULT_LAYOUT, AcctConfigError, TimeFormatter, csv_field, csv_line,
dsn_status_text, format_row, format_time, parse_field_list, parse_record_types.
"""

from __future__ import annotations

from sluice.acct.records import (
    DEFAULT_FIELDS,
    DEFAULT_LAYOUT,
    FEEDBACK_FIELDS,
    AcctConfigError,
    AcctLayout,
    AcctRecord,
    RecordType,
    TimeFormatter,
    csv_field,
    csv_line,
    dsn_status_text,
    format_row,
    format_time,
    parse_field_list,
    parse_record_types,
)

__all__ = [
    "DEFAULT_FIELDS",
    "DEFAULT_LAYOUT",
    "FEEDBACK_FIELDS",
    "AcctConfigError",
    "AcctLayout",
    "AcctRecord",
    "RecordType",
    "TimeFormatter",
    "csv_field",
    "csv_line",
    "dsn_status_text",
    "format_row",
    "format_time",
    "parse_field_list",
    "parse_record_types",
]
