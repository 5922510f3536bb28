"""GroupCommitter with ``inline_max``: batches on the event loop while they are quick, on the
thread for a while after a slow one, never on both at once."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from sluice.errors import SpoolUnavailableError
from sluice.spool._groupcommit import INLINE_PAUSE, SLOW_SHARE, SLOW_WEIGHT, GroupCommitter


class Recorder:
    """A batch runner that records each batch's operations and the thread it ran on, sleeps
    ``slow[op]`` seconds for a listed op, and fails if two batches ever overlap."""

    def __init__(self, slow: dict[int, float] | None = None) -> None:
        self.batches: list[tuple[list[int], int]] = []
        self.slow = slow or {}
        self._inside = 0
        self._guard = threading.Lock()
        self.overlaps = 0

    def __call__(self, ops: Sequence[int]) -> list[object]:
        with self._guard:
            self._inside += 1
            if self._inside > 1:
                self.overlaps += 1
        try:
            pause = max((self.slow.get(op, 0.0) for op in ops), default=0.0)
            if pause:
                time.sleep(pause)
            self.batches.append((list(ops), threading.get_ident()))
            return [ValueError(op) if op < 0 else op * 2 for op in ops]
        finally:
            with self._guard:
                self._inside -= 1

    def threads_of(self, op: int) -> set[int]:
        return {tid for ops, tid in self.batches if op in ops}


def _committer(
    run: Callable[[Sequence[int]], Sequence[object]],
    *,
    linger: float = 0.0,
    max_batch: int = 1000,
    inline_max: float = 1.0,
    inline_pause: float = INLINE_PAUSE,
    defer: float = 0.0,
    urgent: Callable[[int], bool] | None = None,
) -> GroupCommitter[int]:
    """A committer on the running loop whose batches may run there (``inline_max``)."""
    return GroupCommitter(
        "t",
        run,
        loop=asyncio.get_running_loop(),
        linger=linger,
        max_batch=max_batch,
        defer=defer,
        urgent=urgent,
        inline_max=inline_max,
        inline_pause=inline_pause,
    )


def test_quick_batches_run_on_the_loop_one_per_turn() -> None:
    run = Recorder()
    main_thread = threading.get_ident()

    async def main() -> None:
        gc = _committer(run)
        futs = [gc.submit(i) for i in range(10)]
        futs.append(gc.submit(-1))
        results = await asyncio.gather(*futs, return_exceptions=True)
        assert results[:10] == [i * 2 for i in range(10)]
        assert isinstance(results[10], ValueError)
        assert await gc.submit(20) == 40  # the next turn: a batch of its own
        assert gc.stats.batches == gc.stats.inline == 2
        assert gc.stats.ops == 12
        assert gc.stats.largest == 11
        await gc.stop()

    asyncio.run(main())
    assert [ops for ops, _ in run.batches] == [[*range(10), -1], [20]]
    assert {tid for _, tid in run.batches} == {main_thread}


def test_the_linger_collects_a_bigger_batch_on_the_loop() -> None:
    run = Recorder()

    async def main() -> None:
        gc = _committer(run, linger=0.05)
        futs = []
        for i in range(4):
            futs.append(gc.submit(i))
            await asyncio.sleep(0.001)
        assert not any(f.done() for f in futs)
        assert await asyncio.gather(*futs) == [0, 2, 4, 6]
        await gc.stop()

    asyncio.run(main())
    assert [ops for ops, _ in run.batches] == [[0, 1, 2, 3]]


def test_max_batch_caps_a_batch_on_the_loop() -> None:
    run = Recorder()

    async def main() -> None:
        gc = _committer(run, linger=10.0, max_batch=7)
        # A full batch does not wait for the linger.
        results = await asyncio.wait_for(asyncio.gather(*(gc.submit(i) for i in range(50))), 5)
        assert results == [i * 2 for i in range(50)]
        await gc.stop()

    asyncio.run(main())
    assert max(len(ops) for ops, _ in run.batches) <= 7
    assert sorted(op for ops, _ in run.batches for op in ops) == list(range(50))


def test_a_raising_batch_on_the_loop_fails_every_caller() -> None:
    def run(ops: Sequence[int]) -> list[object]:
        raise RuntimeError("boom")

    async def main() -> None:
        gc = _committer(run, max_batch=10)
        results = await asyncio.gather(gc.submit(1), gc.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert gc.stats.inline == 1
        await gc.stop()

    asyncio.run(main())


def _slow_run_length() -> int:
    """Slow batches in a row (from none) that move the batches to the thread."""
    share, n = 0.0, 0
    while share <= SLOW_SHARE:
        share = (1.0 - SLOW_WEIGHT) * share + SLOW_WEIGHT
        n += 1
    return n


SLOW_RUN = _slow_run_length()
#: Ops that take 30 ms each: SLOW_RUN of them in a row move the batches to the thread.
SLOW = {-100 - i: 0.03 for i in range(SLOW_RUN)}


async def _slow_run(gc: GroupCommitter[int]) -> None:
    for op in sorted(SLOW, reverse=True):
        with pytest.raises(ValueError, match=str(op)):
            await gc.submit(op)


def test_slow_batches_now_and_then_keep_the_batches_on_the_loop() -> None:
    """Every third batch slow (a busy machine taking the CPU away): never the thread."""
    assert 3 <= SLOW_RUN <= 20
    run = Recorder(slow={-1: 0.015})
    main_thread = threading.get_ident()

    async def main() -> None:
        gc = _committer(run, inline_max=0.01, inline_pause=60.0)
        for _ in range(30):
            with pytest.raises(ValueError, match="-1"):
                await gc.submit(-1)
            assert await gc.submit(1) == 2
            assert await gc.submit(2) == 4
        assert gc.stats.to_thread == 0
        await gc.stop()

    asyncio.run(main())
    assert {tid for _, tid in run.batches} == {main_thread}


def test_a_run_of_slow_batches_sends_the_next_ones_to_the_thread_for_a_while() -> None:
    run = Recorder(slow=SLOW)
    main_thread = threading.get_ident()

    async def main() -> None:
        gc = _committer(run, inline_max=0.01, inline_pause=0.3)
        await _slow_run(gc)  # on the loop, and too slow
        t_slow = asyncio.get_running_loop().time()
        assert gc.stats.to_thread == 1
        assert await gc.submit(1) == 2
        assert run.threads_of(1) != {main_thread}  # the thread took it
        await asyncio.sleep(0.3 - (asyncio.get_running_loop().time() - t_slow) + 0.02)
        assert await gc.submit(2) == 4  # the pause is over: the loop again
        assert run.threads_of(2) == {main_thread}
        assert gc.stats.inline == SLOW_RUN + 1
        await gc.stop()

    asyncio.run(main())
    assert all(run.threads_of(op) == {main_thread} for op in SLOW)


def test_the_loop_waits_for_the_thread_to_finish_before_taking_over() -> None:
    gate = threading.Event()
    run = Recorder(slow=SLOW)

    def gated(ops: Sequence[int]) -> list[object]:
        if 1 in ops:
            gate.wait(5)
        return run(ops)

    main_thread = threading.get_ident()

    async def main() -> None:
        gc = _committer(gated, inline_max=0.01, inline_pause=0.05)
        await _slow_run(gc)  # slow: the thread's turn
        held = gc.submit(1)  # the thread holds it (gated)
        await asyncio.sleep(0.1)  # the pause is over, but the thread is still busy
        after = gc.submit(2)
        await asyncio.sleep(0.05)
        assert not held.done()
        assert not after.done()  # queued behind the thread's batch, not run beside it
        gate.set()
        assert list(await asyncio.gather(held, after)) == [2, 4]
        assert run.threads_of(2) != {main_thread}
        await asyncio.sleep(0.01)
        assert await gc.submit(3) == 6  # the thread is idle now: the loop takes over
        assert run.threads_of(3) == {main_thread}
        await gc.stop()

    asyncio.run(main())
    assert run.overlaps == 0


def test_mixed_slow_and_quick_batches_never_overlap() -> None:
    rng = random.Random(7)
    run = Recorder(slow={op: 0.004 for op in range(400) if op % 37 < SLOW_RUN})

    async def main() -> None:
        gc = _committer(run, inline_max=0.002, inline_pause=0.01)
        futs = []
        for i in range(400):
            futs.append(gc.submit(i))
            if i % 37 < SLOW_RUN:  # a run of slow batches: over to the thread
                await futs[-1]
            elif rng.random() < 0.3:
                await asyncio.sleep(rng.random() * 0.003)
        assert await asyncio.gather(*futs) == [i * 2 for i in range(400)]
        assert 0 < gc.stats.inline < gc.stats.batches  # both took part
        await gc.stop()

    asyncio.run(main())
    assert run.overlaps == 0
    assert sorted(op for ops, _ in run.batches for op in ops) == list(range(400))


def test_stop_runs_what_waits_on_the_loop_and_abandon_drops_it() -> None:
    run = Recorder()

    async def main(abandon: bool) -> list[object]:
        gc = _committer(run, linger=10.0)
        futs = [gc.submit(i) for i in range(3)]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in futs)
        await gc.stop(abandon=abandon)
        with pytest.raises(SpoolUnavailableError):
            gc.submit(9)
        return list(await asyncio.gather(*futs, return_exceptions=True))

    assert asyncio.run(main(False)) == [0, 2, 4]
    run.batches.clear()
    results = asyncio.run(main(True))
    assert run.batches == []
    assert all(isinstance(r, SpoolUnavailableError) for r in results)


def test_deferred_ops_on_the_loop_ride_with_an_urgent_one() -> None:
    run = Recorder()

    async def main() -> None:
        gc = _committer(run, max_batch=100, defer=10.0, urgent=lambda op: op % 2 == 1)
        lazy = [gc.submit(0), gc.submit(2)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in lazy)
        assert await gc.submit(1) == 2
        assert await asyncio.gather(*lazy) == [0, 4]
        lone = gc.submit(4)
        await asyncio.sleep(0.02)
        assert not lone.done()
        await gc.stop()
        assert lone.result() == 8

    asyncio.run(main())
    assert [sorted(ops) for ops, _ in run.batches] == [[0, 1, 2], [4]]
