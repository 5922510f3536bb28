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


def _odd_is_urgent(op: int) -> bool:
    return op % 2 == 1


def _deferring(seen: list[list[int]], *, max_batch: int, defer: float) -> GroupCommitter[int]:
    """A committer (on the running loop) whose odd ops are urgent; each batch lands in
    ``seen``, sorted."""

    def run(ops: Sequence[int]) -> list[object]:
        seen.append(sorted(ops))
        return list(ops)

    return GroupCommitter(
        "t",
        run,
        loop=asyncio.get_running_loop(),
        linger=0.0,
        max_batch=max_batch,
        defer=defer,
        urgent=_odd_is_urgent,
    )


def test_deferred_ops_ride_with_the_next_urgent_one() -> None:
    """Even (deferrable) ops wait for an odd (urgent) one and share its batch."""
    seen: list[list[int]] = []

    async def main() -> None:
        # defer far longer than the test: only the urgent op can end the wait
        gc = _deferring(seen, max_batch=100, defer=10.0)
        lazy = [gc.submit(0), gc.submit(2)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in lazy)
        assert seen == []
        assert await gc.submit(1) == 1
        assert await asyncio.gather(*lazy) == [0, 2]
        await gc.stop()

    asyncio.run(main())
    assert seen == [[0, 1, 2]]


def test_deferred_ops_run_alone_after_the_deadline() -> None:
    seen: list[list[int]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gc = _deferring(seen, max_batch=100, defer=0.02)
        t0 = loop.time()
        first = gc.submit(0)
        await asyncio.sleep(0.005)
        second = gc.submit(2)  # waits no longer than the first one's deadline
        assert await asyncio.gather(first, second) == [0, 2]
        assert loop.time() - t0 >= 0.019  # the first one waited out its deadline
        # A new deferred op after the run gets its own deadline (no stale timer).
        assert await gc.submit(4) == 4
        await gc.stop()

    asyncio.run(main())
    assert seen == [[0, 2], [4]]


def test_deferred_ops_go_when_the_batch_is_full_or_on_stop() -> None:
    seen: list[list[int]] = []

    async def main() -> None:
        gc = _deferring(seen, max_batch=3, defer=10.0)
        assert await asyncio.gather(*(gc.submit(i) for i in (0, 2, 4))) == [0, 2, 4]
        pending = gc.submit(6)
        await asyncio.sleep(0.02)
        assert not pending.done()
        await gc.stop()  # runs what is pending at once
        assert pending.result() == 6

    asyncio.run(main())
    assert seen == [[0, 2, 4], [6]]


def test_an_urgent_op_never_waits_for_the_deferral() -> None:
    def run(ops: Sequence[int]) -> list[object]:
        return list(ops)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gc: GroupCommitter[int] = GroupCommitter(
            "t", run, loop=loop, linger=0.0, max_batch=100, defer=10.0, urgent=_odd_is_urgent
        )
        for i in (1, 3, 5):
            assert await asyncio.wait_for(gc.submit(i), 5.0) == i
        await gc.stop()

    asyncio.run(main())
