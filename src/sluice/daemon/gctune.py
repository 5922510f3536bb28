"""Garbage-collector settings for the long-running processes (queue manager, workers).

CPython collects its youngest generation every 700 net allocations; one SMTP transaction
allocates a few hundred objects, so by default the collector ran every two or three
messages and took about a tenth of the queue manager's CPU in the relay benchmark. Sluice's
hot paths make few reference cycles, so the young generation is collected far less often,
and everything built at start-up (configuration, tables, recovered queue) is frozen out of
the collector's scans.

Public names: GEN0_THRESHOLD, tune_gc.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "tune_gc"]

#: Net allocations between young-generation collections (CPython's default: 700).
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what exists now and raise the young-generation threshold (call after start-up)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, older, oldest)
