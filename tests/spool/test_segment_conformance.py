"""The Spool conformance suite run against SegmentSpool (one test per check), with small
segments so that rotation, sidecars and deletion happen inside the checks too, and with its
batches on the event loop (the default) as well as on the writer thread only."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from sluice.spool import SegmentSpool, open_spool, spool_kind_at
from sluice.spool.conformance import (
    CHECKS,
    CrashableSpool,
    SpoolOpener,
    check_spool,
    sample_envelope,
)
from sluice.spool.segment import INLINE_MAX


def _segment_opener(
    tmp: Path, segment_size: int, inline_max: float | None = INLINE_MAX
) -> SpoolOpener:
    async def opener() -> CrashableSpool:
        return await SegmentSpool.open(
            str(tmp / "spool"), segment_size=segment_size, inline_max=inline_max
        )

    return opener


#: 64 KiB: the 1 MiB body of check_round_trip gets an oversized segment of its own, and the
#: 300 concurrent stores span several segments. 64 MiB: the default, everything in one.
#: "-thread": every batch on the writer thread (``inline_max=None``).
SIZES: dict[str, tuple[int, float | None]] = {
    "small-segments": (64 * 1024, INLINE_MAX),
    "default-segments": (64 * 1024 * 1024, INLINE_MAX),
    "small-segments-thread": (64 * 1024, None),
}


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance_segment(
    size: str, check: Callable[[SpoolOpener], Coroutine[Any, Any, None]], tmp_path: Path
) -> None:
    asyncio.run(check(_segment_opener(tmp_path, *SIZES[size])))


def test_check_spool_runs_every_check_on_segment(tmp_path: Path) -> None:
    made: list[Path] = []

    def new_store() -> SpoolOpener:
        made.append(tmp_path / str(len(made)))
        return _segment_opener(made[-1], 64 * 1024)

    asyncio.run(check_spool(new_store))
    assert len(made) == len(CHECKS)


@pytest.mark.parametrize("kind", ["sqlite", "segment"])
def test_open_spool_chooses_by_kind(kind: str, tmp_path: Path) -> None:
    async def main() -> type:
        spool = await open_spool(str(tmp_path / "s"), kind=kind, defer=0.0)
        try:
            from sluice.spool.conformance import sample_envelope

            mid = await spool.store(sample_envelope(1), b"body")
            assert await spool.load_body(mid) == b"body"
            return type(spool)
        finally:
            await spool.close()

    got = asyncio.run(main())
    assert got.__name__ == {"sqlite": "SqliteSpool", "segment": "SegmentSpool"}[kind]


def test_open_spool_refuses_an_unknown_kind(tmp_path: Path) -> None:
    from sluice.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown spool kind"):
        asyncio.run(open_spool(str(tmp_path / "s"), kind="lmdb"))


@pytest.mark.parametrize("kind", ["sqlite", "segment"])
def test_an_existing_spool_keeps_its_format(kind: str, tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    assert spool_kind_at(path) is None  # no directory yet
    os.makedirs(path)
    assert spool_kind_at(path) is None  # an empty directory: the configuration decides

    async def make() -> None:
        spool = await open_spool(path, kind=kind, defer=0.0)
        await spool.store(sample_envelope(1), b"Subject: x\r\n\r\nx\r\n")
        await spool.close()

    asyncio.run(make())
    assert spool_kind_at(path) == kind
