"""Choosing the spool implementation by name: ``open_spool(path, kind=...)``.

Public names: open_spool, SPOOL_KINDS, AnySpool.
Raises: ConfigError for an unknown kind; whatever the chosen ``open`` raises
(SpoolFullError, SpoolUnavailableError).
"""

from __future__ import annotations

from typing import Any

from sluice.errors import ConfigError
from sluice.spool.segment import SegmentSpool
from sluice.spool.sqlite import SqliteSpool

__all__ = ["SPOOL_KINDS", "AnySpool", "open_spool"]

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
