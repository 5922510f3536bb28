"""GroupCommitter: batching, one resolution per batch, errors, stop and abandon."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from sluice.errors import SpoolUnavailableError
from sluice.spool._groupcommit import GroupCommitter


def test_results_errors_and_batching() -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def run(ops: Sequence[int]) -> list[object]:
        gate.wait()
        seen.append(list(ops))
        return [ValueError(op) if op % 10 == 3 else op * 2 for op in ops]

    async def main() -> None:
        gc: GroupCommitter[int] = GroupCommitter(
            "t", run, loop=asyncio.get_running_loop(), linger=0.0, max_batch=1000
        )
        futs = [gc.submit(i) for i in range(100)]
        gate.set()
        results = await asyncio.gather(*futs, return_exceptions=True)
        await gc.stop()
        for i, r in enumerate(results):
            if i % 10 == 3:
                assert isinstance(r, ValueError)
            else:
                assert r == i * 2
        assert sorted(x for b in seen for x in b) == list(range(100))
        assert len(seen) <= 2  # the worker took the first op, then everything else
        assert gc.stats.batches == len(seen)
        assert gc.stats.ops == 100

    asyncio.run(main())


def test_max_batch_caps_a_batch() -> None:
    sizes: list[int] = []

    def run(ops: Sequence[int]) -> list[object]:
        sizes.append(len(ops))
        return list(ops)

    async def main() -> None:
        gc: GroupCommitter[int] = GroupCommitter(
            "t", run, loop=asyncio.get_running_loop(), linger=0.0, max_batch=7
        )
        assert await asyncio.gather(*(gc.submit(i) for i in range(50))) == list(range(50))
        await gc.stop()

    asyncio.run(main())
    assert max(sizes) <= 7


def test_a_raising_batch_fails_every_caller() -> None:
    def run(ops: Sequence[int]) -> list[object]:
        raise RuntimeError("boom")

    async def main() -> None:
        gc: GroupCommitter[int] = GroupCommitter(
            "t", run, loop=asyncio.get_running_loop(), linger=0.0, max_batch=10
        )
        results = await asyncio.gather(gc.submit(1), gc.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        await gc.stop()

    asyncio.run(main())


def test_stop_runs_pending_work_and_abandon_drops_it() -> None:
    gate = threading.Event()
    ran: list[int] = []

    def run(ops: Sequence[int]) -> list[object]:
        gate.wait()
        ran.extend(ops)
        return list(ops)

    async def main(abandon: bool) -> list[object]:
        gc: GroupCommitter[int] = GroupCommitter(
            "t", run, loop=asyncio.get_running_loop(), linger=0.0, max_batch=1
        )
        futs = [gc.submit(i) for i in range(5)]
        stopping = asyncio.ensure_future(gc.stop(abandon=abandon))
        await asyncio.sleep(0.01)
        gate.set()
        await stopping
        with pytest.raises(SpoolUnavailableError):
            gc.submit(9)
        return list(await asyncio.gather(*futs, return_exceptions=True))

    assert asyncio.run(main(False)) == [0, 1, 2, 3, 4]
    gate.clear()
    ran.clear()
    results = asyncio.run(main(True))
    assert len(ran) <= 1  # at most the batch already running
    assert sum(isinstance(r, SpoolUnavailableError) for r in results) >= 4


def test_linger_collects_a_bigger_batch() -> None:
    sizes: list[int] = []

    def run(ops: Sequence[int]) -> list[object]:
        sizes.append(len(ops))
        return list(ops)

    async def main() -> None:
        gc: GroupCommitter[int] = GroupCommitter(
            "t", run, loop=asyncio.get_running_loop(), linger=0.05, max_batch=4
        )
        futs = []
        for i in range(4):
            futs.append(gc.submit(i))
            await asyncio.sleep(0.001)
        assert await asyncio.gather(*futs) == [0, 1, 2, 3]
        await gc.stop()

    asyncio.run(main())
    assert sizes == [4]
