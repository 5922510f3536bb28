"""Choosing the spool implementation by name: ``open_spool(path, kind=...)``.

Public names: open_spool, spool_kind_at, SPOOL_KINDS, AnySpool.
Raises: ConfigError for an unknown kind; whatever the chosen ``open`` raises
(SpoolFullError, SpoolUnavailableError).
"""

from __future__ import annotations

import os
from typing import Any

from sluice.errors import ConfigError
from sluice.spool._segment_files import seg_number
from sluice.spool.segment import SegmentSpool
from sluice.spool.sqlite import DB_NAME, SqliteSpool

__all__ = ["SPOOL_KINDS", "AnySpool", "open_spool", "spool_kind_at"]

#: The durable spools by name: "sqlite" (SQLite WAL, the default) and "segment" (an
#: append-only segment log, less CPU per message; DESIGN §2).
SPOOL_KINDS = ("sqlite", "segment")

AnySpool = SqliteSpool | SegmentSpool


async def open_spool(path: str, *, kind: str = "sqlite", **kw: Any) -> AnySpool:
    """Open the spool of ``kind`` at ``path``; ``kw`` are that spool's ``open`` keywords
    (both take ``linger``, ``max_batch``, ``max_bytes`` and ``defer``)."""
    match kind:
        case "sqlite":
            return await SqliteSpool.open(path, **kw)
        case "segment":
            return await SegmentSpool.open(path, **kw)
        case _:
            raise ConfigError(f"unknown spool kind {kind!r} (known: {', '.join(SPOOL_KINDS)})")


def spool_kind_at(path: str) -> str | None:
    """The kind of the spool already at ``path`` (its files say), None when there is none:
    an existing spool keeps its format whatever the configuration asks for a new one."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return None
    if DB_NAME in names:
        return "sqlite"
    if any(seg_number(name) is not None for name in names):
        return "segment"
    return None
