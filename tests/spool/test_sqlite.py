"""SqliteSpool behaviour beyond the conformance suite: group commit, full disk, damage, locks."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.errors import SpoolFullError, SpoolUnavailableError
from sluice.message import Envelope, RcptState, Recipient
from sluice.spool import CorruptMessageError, RcptUpdate, SqliteSpool
from sluice.spool.conformance import sample_envelope

BODY = b"Subject: x\r\n\r\n" + b"y" * 2034 + b"\r\n"  # 2 KB


async def _fill(spool: SqliteSpool) -> tuple[list[int], SpoolFullError]:
    """Store 2 KB messages until the spool is full: (acknowledged ids, the error)."""
    acked: list[int] = []
    for i in range(10_000):
        try:
            acked.append(await spool.store(sample_envelope(i), BODY))
        except SpoolFullError as exc:
            return acked, exc
    raise AssertionError("the spool never filled up")


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path / "spool.db", isolation_level=None)


def test_concurrent_stores_share_commits(tmp_path: Path) -> None:
    async def main() -> None:
        spool = await SqliteSpool.open(str(tmp_path / "s"))
        try:
            ids = await asyncio.gather(*(spool.store(sample_envelope(i), BODY) for i in range(300)))
            assert len(set(ids)) == 300
            stats = spool.write_stats
            assert stats.ops == 300
            assert stats.batches < 30, stats  # group commit: not one commit per message
            assert stats.largest > 10
        finally:
            await spool.close()

    asyncio.run(main())


def test_bad_envelope_fails_alone(tmp_path: Path) -> None:
    """A store that cannot be encoded fails; the stores sharing its batch succeed."""
    bad = Envelope(sender="\udcff@x.example", recipients=(Recipient(address="a@b.example"),))

    async def main() -> None:
        spool = await SqliteSpool.open(str(tmp_path / "s"))
        try:
            results = await asyncio.gather(
                spool.store(sample_envelope(1), BODY),
                spool.store(bad, BODY),
                spool.store(sample_envelope(2), BODY),
                return_exceptions=True,
            )
            assert isinstance(results[1], SpoolUnavailableError), results
            assert isinstance(results[0], int)
            assert isinstance(results[2], int)
            assert [m.msg_id for m in spool.recover()] == [results[0], results[2]]
        finally:
            await spool.close()

    asyncio.run(main())


def test_quota_full_then_works_again_when_space_is_freed(tmp_path: Path) -> None:
    """SQLITE_FULL → SpoolFullError, nothing half-stored; removing messages makes room."""

    async def main() -> None:
        spool = await SqliteSpool.open(str(tmp_path / "s"), max_bytes=512 * 1024)
        try:
            acked, exc = await _fill(spool)
            assert exc.reply_hint is not None
            assert exc.reply_hint.code == 452
            assert len(acked) > 20
            # Still full for a new message, and the failed ones left nothing behind.
            with pytest.raises(SpoolFullError):
                await spool.store(sample_envelope(0), BODY)
            assert [m.msg_id for m in spool.recover()] == acked
            for mid in acked[:20]:
                await spool.remove(mid)
            again = await spool.store(sample_envelope(1), BODY)
            assert await spool.load_body(again) == BODY
        finally:
            await spool.close()
        spool = await SqliteSpool.open(str(tmp_path / "s"), max_bytes=512 * 1024)
        try:
            assert [m.msg_id for m in spool.recover()] == [*acked[20:], again]
        finally:
            await spool.close()

    asyncio.run(main())


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root and permission to mount; skipped otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_enospc_then_resumes_when_space_returns(small_tmpfs: Path) -> None:
    """T05 at spool level on a real full file system: 452, no loss, resumes by itself."""
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * (2 * 1024 * 1024))

    async def main() -> None:
        spool = await SqliteSpool.open(str(small_tmpfs / "spool"))
        try:
            acked, _ = await _fill(spool)
            assert acked
            with pytest.raises(SpoolFullError):
                await spool.store(sample_envelope(0), BODY)
            ballast.unlink()  # space returns; nobody restarts anything
            more = [await spool.store(sample_envelope(i), BODY) for i in range(10)]
            assert set(more).isdisjoint(acked)
        finally:
            await spool.close()
        spool = await SqliteSpool.open(str(small_tmpfs / "spool"))
        try:
            got = [m.msg_id for m in spool.recover()]
            assert got == [*acked, *more]
            for mid in got:
                assert await spool.load_body(mid) == BODY
        finally:
            await spool.close()

    asyncio.run(main())


def test_damaged_envelope_is_quarantined_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s"

    async def store3() -> list[int]:
        spool = await SqliteSpool.open(str(path))
        try:
            return [await spool.store(sample_envelope(i), BODY) for i in range(3)]
        finally:
            await spool.close()

    a, b, c = asyncio.run(store3())
    db = _db(path)
    db.execute("UPDATE msg SET env=? WHERE id=?", (b"[1,garbage", b))
    db.close()

    async def reopen() -> tuple[list[int], list[int]]:
        spool = await SqliteSpool.open(str(path))
        try:
            first = [m.msg_id for m in spool.recover()]
            second = [m.msg_id for m in spool.recover()]
            return first, second
        finally:
            await spool.close()

    with caplog.at_level(logging.ERROR, logger="sluice.spool"):
        first, second = asyncio.run(reopen())
    assert first == [a, c]
    assert second == [a, c]
    assert sum("quarantined" in r.getMessage() for r in caplog.records) == 1
    db = _db(path)
    assert db.execute("SELECT id, reason FROM quarantine").fetchall() == [
        (b, "envelope checksum mismatch")
    ]
    assert db.execute("SELECT count(*) FROM body WHERE id=?", (b,)).fetchone() == (1,)  # kept
    db.close()


def test_damaged_body_is_detected_at_load(tmp_path: Path) -> None:
    path = tmp_path / "s"

    async def main() -> None:
        spool = await SqliteSpool.open(str(path))
        try:
            mid = await spool.store(sample_envelope(1), BODY)
            db = _db(path)
            db.execute("UPDATE body SET data=? WHERE id=?", (BODY[:-1] + b"!", mid))
            db.close()
            with pytest.raises(CorruptMessageError):
                await spool.load_body(mid)
        finally:
            await spool.close()

    asyncio.run(main())


def test_a_spool_in_use_cannot_be_opened_twice(tmp_path: Path) -> None:
    async def main() -> None:
        first = await SqliteSpool.open(str(tmp_path / "s"))
        try:
            with pytest.raises(SpoolUnavailableError, match="in use"):
                await SqliteSpool.open(str(tmp_path / "s"))
        finally:
            await first.close()
        second = await SqliteSpool.open(str(tmp_path / "s"))
        await second.close()

    asyncio.run(main())


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    async def make() -> None:
        await (await SqliteSpool.open(str(tmp_path / "s"))).close()

    asyncio.run(make())
    db = _db(tmp_path / "s")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(SpoolUnavailableError, match="unknown spool format"):
        asyncio.run(make())


def test_not_a_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir()
    (path / "spool.db").write_bytes(os.urandom(8192))

    async def make() -> None:
        await (await SqliteSpool.open(str(path))).close()

    with pytest.raises(SpoolUnavailableError):
        asyncio.run(make())


def test_cancelled_store_before_commit_is_not_stored(tmp_path: Path) -> None:
    async def main() -> None:
        spool = await SqliteSpool.open(str(tmp_path / "s"))
        try:
            task = asyncio.ensure_future(spool.store(sample_envelope(1), BODY))
            await asyncio.sleep(0)
            task.cancel()
            kept = await spool.store(sample_envelope(2), BODY)
            ids = [m.msg_id for m in spool.recover()]
            assert kept in ids
            assert len(ids) in (1, 2)  # at-least-once: a cancel may come too late
        finally:
            await spool.close()

    asyncio.run(main())


def test_clean_close_leaves_no_wal_to_replay(tmp_path: Path) -> None:
    async def main() -> None:
        spool = await SqliteSpool.open(str(tmp_path / "s"))
        mid = await spool.store(sample_envelope(1), BODY)
        assert await spool.load_body(mid) == BODY
        await spool.close()

    asyncio.run(main())
    assert not (tmp_path / "s" / "spool.db-wal").exists()


def test_ids_are_reserved_in_blocks_and_never_reused(tmp_path: Path) -> None:
    """``meta`` is written once per block of ids; a restart (even a crash) skips the rest of
    the block, and a spool whose ``meta`` holds the last id + 1 (older format) still opens
    without reusing one."""
    path = str(tmp_path / "s")

    async def store(n: int, *, crash: bool) -> list[int]:
        spool = await SqliteSpool.open(path)
        ids = [await spool.store(sample_envelope(i), BODY) for i in range(n)]
        await (spool.abandon() if crash else spool.close())
        return ids

    first = asyncio.run(store(3, crash=True))
    db = _db(tmp_path / "s")
    (ceiling,) = db.execute("SELECT v FROM meta WHERE k='next_id'").fetchone()
    db.close()
    assert ceiling > max(first) + 2  # a block was reserved, not just the ids used
    second = asyncio.run(store(2, crash=False))
    assert min(second) >= ceiling
    # A spool written by an older version: meta = last id + 1, ids removed since.
    db = _db(tmp_path / "s")
    db.execute("UPDATE meta SET v=? WHERE k='next_id'", (max(second) + 1,))
    db.execute("DELETE FROM msg WHERE id=?", (max(second),))
    db.close()
    third = asyncio.run(store(1, crash=False))
    assert third[0] > max(second)


def test_batches_larger_than_a_statement_chunk(tmp_path: Path) -> None:
    """Hundreds of stores, marks and removes in single batches (several statement chunks),
    a recipient marked twice in one batch (the later update wins), marks of unknown ids."""

    async def main() -> None:
        spool = await SqliteSpool.open(str(tmp_path / "s"), defer=10.0)
        try:
            envs = [sample_envelope(i, rcpts=2) for i in range(300)]
            ids = await asyncio.gather(*(spool.store(e, BODY) for e in envs))
            assert spool.write_stats.largest > 64
            deferred = [
                RcptUpdate(
                    msg_id=m, rcpt_index=1, state=RcptState.QUEUED, attempts=1, next_attempt=9.0
                )
                for m in ids
            ]
            final = [
                RcptUpdate(msg_id=m, rcpt_index=1, state=RcptState.DELIVERED, attempts=2)
                for m in ids[:100]
            ]
            junk = [
                RcptUpdate(msg_id=10**9, rcpt_index=0, state=RcptState.BOUNCED, attempts=1),
                RcptUpdate(msg_id=ids[0], rcpt_index=2, state=RcptState.BOUNCED, attempts=1),
            ]
            # Deferred marks wait (defer=10 s) and ride with the store below: one batch.
            batches = spool.write_stats.batches
            later = [
                asyncio.ensure_future(c)
                for c in (
                    spool.mark(deferred),
                    spool.mark(final),
                    spool.mark(junk),
                    *(spool.remove(m) for m in ids[200:]),
                )
            ]
            await asyncio.sleep(0.01)
            assert not any(t.done() for t in later)
            extra = await spool.store(sample_envelope(999), BODY)
            await asyncio.gather(*later)
            assert spool.write_stats.batches == batches + 1
            got = {m.msg_id: m for m in spool.recover()}
            assert sorted(got) == [*ids[:200], extra]
            for m in ids[:200]:
                rcpts = got[m].rcpts
                assert rcpts[0].state is RcptState.QUEUED
                assert rcpts[0].attempts == 0
                want = RcptState.DELIVERED if m in ids[:100] else RcptState.QUEUED
                assert rcpts[1].state is want, (m, rcpts)
        finally:
            await spool.close()

    asyncio.run(main())
