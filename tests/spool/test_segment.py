"""SegmentSpool beyond the conformance suite: torn tails, damage, deletion, compaction,
long random histories, quotas, locks, and the body reader's two paths."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from pathlib import Path

import pytest
from _segment_helpers import BODY, SMALL, flip, ids_after_reopen, records, segs

from sluice.errors import SpoolFullError, SpoolUnavailableError
from sluice.message import RcptState
from sluice.spool import (
    FRESH,
    CorruptMessageError,
    RcptProgress,
    RcptUpdate,
    SegmentSpool,
    UnknownMessageError,
)
from sluice.spool._segment_rec import HDR_SIZE
from sluice.spool.conformance import sample_envelope


def test_torn_tail_is_discarded_and_cleared(tmp_path: Path) -> None:
    """A crash mid-write leaves part of a record after the log's end: recovery keeps every
    whole record, zeroes the torn bytes (never acknowledged: no quarantine copy), and
    appends after."""
    path = tmp_path / "s"

    async def fill() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        ids = [await spool.store(sample_envelope(i), BODY) for i in range(5)]
        await spool.abandon()
        return ids

    ids = asyncio.run(fill())
    (seg,) = segs(path)
    recs = records(seg)
    off, _, _, size = recs[-1]
    data = bytearray(seg.read_bytes())
    end = off + size
    torn = data[off : off + size // 2]  # the first half of a record: a valid header
    data[end : end + len(torn)] = torn
    seg.write_bytes(bytes(data))

    async def reopen() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        try:
            got = [m.msg_id for m in spool.recover()]
            new = await spool.store(sample_envelope(9), BODY)
            assert await spool.load_body(new) == BODY
            return [*got, new]
        finally:
            await spool.close()

    got = asyncio.run(reopen())
    assert got[:-1] == ids
    assert got[-1] > max(ids)
    assert not (path / "quarantine").exists()
    assert asyncio.run(ids_after_reopen(path, segment_size=SMALL * 4)) == got


def test_damaged_record_is_quarantined_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s"

    async def store3() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        try:
            return [await spool.store(sample_envelope(i), BODY) for i in range(3)]
        finally:
            await spool.close()

    a, b, c = asyncio.run(store3())
    (seg,) = segs(path)
    off = next(o for o, _, key, _ in records(seg) if key == b)
    flip(seg, off + HDR_SIZE + 5)  # inside b's envelope

    async def reopen() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        try:
            assert [m.msg_id for m in spool.recover()] == [a, c]
            assert [m.msg_id for m in spool.recover()] == [a, c]
            with pytest.raises(UnknownMessageError):
                await spool.load_body(b)
            assert await spool.load_body(c) == BODY
        finally:
            await spool.close()

    with caplog.at_level(logging.ERROR, logger="sluice.spool"):
        asyncio.run(reopen())
    assert any("quarantined" in r.getMessage() for r in caplog.records)
    kept = list((path / "quarantine").glob("*.bad"))
    assert len(kept) == 1
    assert b"+1@sender.example" in kept[0].read_bytes()  # the damaged record, kept whole


def test_damaged_sidecar_is_rebuilt_and_damaged_body_detected_at_load(tmp_path: Path) -> None:
    path = tmp_path / "s"

    async def fill() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL)
        try:
            return [await spool.store(sample_envelope(i), BODY) for i in range(80)]
        finally:
            await spool.close()

    ids = asyncio.run(fill())
    files = segs(path)
    assert len(files) >= 3
    sidecar = files[0].with_suffix(".idx")
    assert sidecar.exists()
    flip(sidecar, 100)
    off, _, victim, size = records(files[1])[3]
    flip(files[1], off + size - 10)  # inside a body of a sealed segment

    async def reopen() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL)
        try:
            assert [m.msg_id for m in spool.recover()] == ids
            with pytest.raises(CorruptMessageError):
                await spool.load_body(victim)
            assert await spool.load_body(ids[0]) == BODY
        finally:
            await spool.close()

    asyncio.run(reopen())
    assert sidecar.exists()


def test_segments_are_deleted_once_everything_in_them_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "s"

    async def main() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL, defer=0.0)
        try:
            ids = [await spool.store(sample_envelope(i), BODY) for i in range(120)]
            assert len(segs(path)) >= 4
            await spool.mark(
                [
                    RcptUpdate(msg_id=m, rcpt_index=0, state=RcptState.DELIVERED, attempts=1)
                    for m in ids
                ]
            )
            for m in ids:
                await spool.remove(m)
            assert len(segs(path)) == 1, segs(path)  # only the active one is left
            assert not list(path.glob("seg-*.idx"))
            return ids
        finally:
            await spool.close()

    ids = asyncio.run(main())

    async def reopen() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL)
        try:
            assert list(spool.recover()) == []
            new = await spool.store(sample_envelope(0), BODY)
            assert new > max(ids)
        finally:
            await spool.close()

    asyncio.run(reopen())


def test_compaction_keeps_live_messages_and_marks(tmp_path: Path) -> None:
    """A few long-deferred messages in every segment, the rest delivered: old segments are
    compacted away; every deferred message keeps its body and its progress."""
    path = tmp_path / "s"
    deferred: dict[int, RcptProgress] = {}

    async def main() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL, defer=0.0)
        try:
            for rnd in range(30):
                ids = await asyncio.gather(
                    *(spool.store(sample_envelope(i, rcpts=2), BODY) for i in range(20))
                )
                keep, drop = ids[0], ids[1:]
                upd = RcptUpdate(
                    msg_id=keep,
                    rcpt_index=1,
                    state=RcptState.QUEUED,
                    attempts=rnd + 1,
                    next_attempt=1.9e9 + rnd,
                    detail=f"451 4.7.1 later {rnd}",
                )
                await spool.mark(
                    [
                        upd,
                        *(
                            RcptUpdate(
                                msg_id=m, rcpt_index=i, state=RcptState.DELIVERED, attempts=1
                            )
                            for m in drop
                            for i in (0, 1)
                        ),
                    ]
                )
                deferred[keep] = upd.progress()
                await asyncio.gather(*(spool.remove(m) for m in drop))
            first = min(int(p.name[4:12]) for p in segs(path))
            assert first > 1, "the oldest segments were never compacted away"
            got = {m.msg_id: m for m in spool.recover()}
            assert set(got) == set(deferred)
            assert list(got) == sorted(got)  # id order across merged segments
            for mid, prog in deferred.items():
                assert got[mid].rcpts == (FRESH, prog)
                assert await spool.load_body(mid) == BODY
            total = sum(p.stat().st_size for p in segs(path))
            assert total <= 6 * SMALL, total
        finally:
            await spool.abandon()

    asyncio.run(main())

    async def reopen() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL)
        try:
            got = {m.msg_id: m for m in spool.recover()}
            assert set(got) == set(deferred)
            for mid, prog in deferred.items():
                assert got[mid].rcpts == (FRESH, prog)
                assert got[mid].envelope.recipients == sample_envelope(0, rcpts=2).recipients
                assert await spool.load_body(mid) == BODY
        finally:
            await spool.close()

    asyncio.run(reopen())


def test_random_history_reopens_to_exactly_the_live_set(tmp_path: Path) -> None:
    """Many rounds of stores, marks and removes, with crashes and clean restarts between:
    each reopen yields exactly the model's messages, progress and bodies."""
    path = tmp_path / "s"
    rng = random.Random(4242)
    model: dict[int, tuple[int, list[RcptProgress], bytes]] = {}
    counter = 0

    async def session(crash: bool) -> None:
        nonlocal counter
        spool = await SegmentSpool.open(str(path), segment_size=SMALL, defer=0.0)
        try:
            got = {m.msg_id: m for m in spool.recover()}
            assert set(got) == set(model)
            for mid, (n, prog, body) in model.items():
                assert got[mid].envelope == sample_envelope(n, rcpts=len(prog))
                assert list(got[mid].rcpts) == prog
                assert await spool.load_body(mid) == body
            for _ in range(40):
                op = rng.random()
                if op < 0.45 or not model:
                    counter += 1
                    nr = rng.randint(1, 3)
                    body = BODY[: rng.randint(0, len(BODY))]
                    mid = await spool.store(sample_envelope(counter, rcpts=nr), body)
                    model[mid] = (counter, [FRESH] * nr, body)
                elif op < 0.8:
                    mid = rng.choice(list(model))
                    idx = rng.randrange(len(model[mid][1]))
                    upd = RcptUpdate(
                        msg_id=mid,
                        rcpt_index=idx,
                        state=rng.choice(list(RcptState)),
                        attempts=rng.randint(0, 9),
                        next_attempt=rng.choice([None, 1.8e9 + rng.random()]),
                        detail=rng.choice(["", "250 ok", "451 try later ü"]),
                    )
                    await spool.mark([upd])
                    model[mid][1][idx] = upd.progress()
                else:
                    mid = rng.choice(list(model))
                    await spool.remove(mid)
                    del model[mid]
        finally:
            await (spool.abandon() if crash else spool.close())

    for k in range(12):
        asyncio.run(session(crash=k % 2 == 0))
    asyncio.run(session(crash=False))


def test_quota_full_then_works_again_when_space_is_freed(tmp_path: Path) -> None:
    """max_bytes → SpoolFullError, nothing half-stored; marks and removes still work and
    free whole segments, after which stores succeed again."""

    async def main() -> tuple[list[int], int]:
        spool = await SegmentSpool.open(str(tmp_path / "s"), max_bytes=512 * 1024, defer=0.0)
        acked: list[int] = []
        try:
            full: SpoolFullError | None = None
            for i in range(10_000):
                try:
                    acked.append(await spool.store(sample_envelope(i), BODY))
                except SpoolFullError as exc:
                    full = exc
                    break
            assert full is not None, "the spool never filled up"
            assert full.reply_hint is not None
            assert full.reply_hint.code == 452
            assert len(acked) > 20
            with pytest.raises(SpoolFullError):
                await spool.store(sample_envelope(0), BODY)
            assert [m.msg_id for m in spool.recover()] == acked
            await spool.mark(
                [
                    RcptUpdate(msg_id=m, rcpt_index=0, state=RcptState.DELIVERED, attempts=1)
                    for m in acked[:150]
                ]
            )
            for mid in acked[:150]:
                await spool.remove(mid)
            again = await spool.store(sample_envelope(1), BODY)
            assert await spool.load_body(again) == BODY
            return acked, again
        finally:
            await spool.close()

    acked, again = asyncio.run(main())
    assert asyncio.run(ids_after_reopen(tmp_path / "s", max_bytes=512 * 1024)) == [
        *acked[150:],
        again,
    ]


def test_a_spool_in_use_cannot_be_opened_twice(tmp_path: Path) -> None:
    async def main() -> None:
        first = await SegmentSpool.open(str(tmp_path / "s"), segment_size=SMALL)
        try:
            with pytest.raises(SpoolUnavailableError, match="in use"):
                await SegmentSpool.open(str(tmp_path / "s"), segment_size=SMALL)
        finally:
            await first.close()
        second = await SegmentSpool.open(str(tmp_path / "s"), segment_size=SMALL)
        await second.close()

    asyncio.run(main())


def test_bad_envelope_fails_alone(tmp_path: Path) -> None:
    from sluice.message import Envelope, Recipient

    bad = Envelope(sender="\udcff@x.example", recipients=(Recipient(address="a@b.example"),))

    async def main() -> None:
        spool = await SegmentSpool.open(str(tmp_path / "s"), segment_size=SMALL)
        try:
            results = await asyncio.gather(
                spool.store(sample_envelope(1), BODY),
                spool.store(bad, BODY),
                spool.store(sample_envelope(2), BODY),
                return_exceptions=True,
            )
            assert isinstance(results[1], SpoolUnavailableError), results
            assert [m.msg_id for m in spool.recover()] == [results[0], results[2]]
        finally:
            await spool.close()

    asyncio.run(main())


def test_concurrent_stores_share_commits(tmp_path: Path) -> None:
    async def main() -> None:
        spool = await SegmentSpool.open(str(tmp_path / "s"), segment_size=SMALL * 16)
        try:
            ids = await asyncio.gather(*(spool.store(sample_envelope(i), BODY) for i in range(300)))
            assert len(set(ids)) == 300
            stats = spool.write_stats
            assert stats.ops == 300
            assert stats.batches < 30, stats
        finally:
            await spool.close()

    asyncio.run(main())


@pytest.mark.parametrize("inline_max", [1.0, None])
def test_quick_batches_run_on_the_event_loop_unless_told_not_to(
    inline_max: float | None, tmp_path: Path
) -> None:
    async def main() -> None:
        spool = await SegmentSpool.open(str(tmp_path / "s"), inline_max=inline_max)
        try:
            ids = await asyncio.gather(*(spool.store(sample_envelope(i), BODY) for i in range(50)))
            await asyncio.gather(*(spool.remove(i) for i in ids[:10]))
            stats = spool.write_stats
            assert stats.ops == 60
            assert stats.inline == (stats.batches if inline_max else 0)
        finally:
            await spool.close()
        spool = await SegmentSpool.open(str(tmp_path / "s"))
        try:
            assert sorted(m.msg_id for m in spool.recover()) == sorted(ids[10:])
        finally:
            await spool.close()

    asyncio.run(main())


def test_uncached_bodies_are_read_on_the_reader_thread(tmp_path: Path) -> None:
    """Bodies evicted from the page cache come through the reader thread, intact."""
    path = tmp_path / "s"

    async def main() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 16)
        try:
            bodies = [BODY + b"%d" % i for i in range(50)]
            ids = [await spool.store(sample_envelope(i), b) for i, b in enumerate(bodies)]
            assert spool._read_batch(ids) == bodies
            for seg in segs(path):
                fd = os.open(seg, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
            got = await asyncio.gather(*(spool.load_body(m) for m in ids))
            assert got == bodies
            assert spool._rq.stats.ops > 0  # some came from the thread
            with pytest.raises(UnknownMessageError):
                spool._read_blocking(10**9, {})
        finally:
            await spool.close()

    asyncio.run(main())


def test_recover_snapshot_survives_compaction_during_iteration(tmp_path: Path) -> None:
    """recover() snapshots; if compaction then moves live messages out of a segment and
    deletes it before the iteration reaches it, they are still yielded, whole."""
    path = tmp_path / "s"

    async def main() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL, defer=0.0)
        try:
            keep = []
            for i in range(40):
                ids = [await spool.store(sample_envelope(i * 10 + k), BODY) for k in range(3)]
                keep.append(ids[0])
                for m in ids[1:]:
                    await spool.remove(m)
            first = segs(path)[0]
            it = spool.recover()  # the snapshot is taken here
            for i in range(400):  # churn until the first segment is compacted away
                m = await spool.store(sample_envelope(1000 + i), BODY)
                await spool.remove(m)
                if not first.exists():
                    break
            assert not first.exists(), "compaction never removed the first segment"
            got = list(it)
            assert [m.msg_id for m in got] == keep
            for m in got:
                assert m.envelope == sample_envelope(int(m.envelope.arrival - 1_800_000_000))
        finally:
            await spool.close()

    asyncio.run(main())
