"""The Spool conformance suite run against every implementation (one test per check)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sluice.spool import MemoryDisk, MemorySpool, SqliteSpool
from sluice.spool.conformance import CHECKS, CrashableSpool, SpoolOpener, check_spool


def _memory_opener(_: Path) -> SpoolOpener:
    disk = MemoryDisk()

    async def open_spool() -> CrashableSpool:
        return MemorySpool(disk)

    return open_spool


def _sqlite_opener(tmp: Path) -> SpoolOpener:
    async def open_spool() -> CrashableSpool:
        return await SqliteSpool.open(str(tmp / "spool"))

    return open_spool


IMPLS: dict[str, Callable[[Path], SpoolOpener]] = {
    "memory": _memory_opener,
    "sqlite": _sqlite_opener,
}


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(
    impl: str, check: Callable[[SpoolOpener], Coroutine[Any, Any, None]], tmp_path: Path
) -> None:
    asyncio.run(check(IMPLS[impl](tmp_path)))


def test_check_spool_runs_every_check(tmp_path: Path) -> None:
    made: list[Path] = []

    def new_store() -> SpoolOpener:
        made.append(tmp_path / str(len(made)))
        return _sqlite_opener(made[-1])

    asyncio.run(check_spool(new_store))
    assert len(made) == len(CHECKS)


class _LosesMarks(MemorySpool):
    """A broken spool: marks are not kept. The suite must notice."""

    async def mark(self, updates):  # type: ignore[no-untyped-def]
        return None


def test_suite_catches_a_spool_that_forgets_marks() -> None:
    from sluice.spool.conformance import check_mark_persists

    disk = MemoryDisk()

    async def open_spool() -> CrashableSpool:
        return _LosesMarks(disk)

    with pytest.raises(AssertionError):
        asyncio.run(check_mark_persists(open_spool))
