"""MemorySpool specifics (the shared rules are in test_conformance.py)."""

from __future__ import annotations

import asyncio

import pytest

from sluice.errors import SpoolFullError
from sluice.spool import MemoryDisk, MemorySpool
from sluice.spool.conformance import sample_envelope


def test_full_disk_refuses_stores_until_cleared() -> None:
    async def main() -> None:
        disk = MemoryDisk()
        spool = MemorySpool(disk)
        kept = await spool.store(sample_envelope(1), b"a")
        disk.full = True
        with pytest.raises(SpoolFullError):
            await spool.store(sample_envelope(2), b"b")
        assert [m.msg_id for m in spool.recover()] == [kept]
        disk.full = False
        assert await spool.store(sample_envelope(3), b"c") > kept
        await spool.close()

    asyncio.run(main())
