"""SegmentSpool under faults: a full file system, a failed write, unsynced removes, records
of another format, envelopes that pass their checksums but do not decode."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _segment_helpers import BODY, SMALL, ids_after_reopen, records, segs

from sluice.errors import SpoolFullError, SpoolUnavailableError
from sluice.message import RcptState
from sluice.spool import RcptUpdate, SegmentSpool, UnknownMessageError
from sluice.spool._segment_rec import HDR_SIZE
from sluice.spool.conformance import sample_envelope


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
    path = str(small_tmpfs / "spool")

    async def main() -> None:
        spool = await SegmentSpool.open(path, segment_size=4 * SMALL)
        acked: list[int] = []
        try:
            with pytest.raises(SpoolFullError):  # noqa: PT012 - fill until it fails
                for i in range(10_000):
                    acked.append(await spool.store(sample_envelope(i), BODY))
            assert acked
            with pytest.raises(SpoolFullError):
                await spool.store(sample_envelope(0), BODY)
            # Progress can still be recorded while full (the segment keeps a reserve).
            await spool.mark(
                [RcptUpdate(msg_id=acked[0], rcpt_index=0, state=RcptState.QUEUED, attempts=1)]
            )
            ballast.unlink()  # space returns; nobody restarts anything
            more = [await spool.store(sample_envelope(i), BODY) for i in range(10)]
            assert set(more).isdisjoint(acked)
        finally:
            await spool.close()
        spool = await SegmentSpool.open(path, segment_size=4 * SMALL)
        try:
            got = [m.msg_id for m in spool.recover()]
            assert got == [*acked, *more]
            for mid in got:
                assert await spool.load_body(mid) == BODY
        finally:
            await spool.close()

    asyncio.run(main())


def test_unsynced_removes_skip_the_fdatasync_and_still_stick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync_removes=False: a batch of removes alone is written without an fdatasync; the
    next store's makes it durable; after a crash (abandon) the removals hold."""
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    path = tmp_path / "s"

    async def main() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL, sync_removes=False)
        try:
            ids = [await spool.store(sample_envelope(i), BODY) for i in range(4)]
            before = len(calls)
            await spool.remove(ids[0])
            await spool.remove(ids[1])
            assert len(calls) == before  # no fdatasync for removes alone
            await spool.mark(
                [RcptUpdate(msg_id=ids[2], rcpt_index=0, state=RcptState.BOUNCED, attempts=1)]
            )
            assert len(calls) == before + 1  # marks are always durable (D4)
            return ids
        finally:
            await spool.abandon()

    ids = asyncio.run(main())
    assert asyncio.run(ids_after_reopen(path, segment_size=SMALL)) == ids[2:]


def test_other_format_version_and_sqlite_directory_are_refused(tmp_path: Path) -> None:
    """An intact record of another version is never 'repaired' away; a directory holding
    a SQLite spool is not taken for an empty segment spool."""
    import zlib

    path = tmp_path / "s"

    async def make() -> None:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL)
        await spool.store(sample_envelope(1), BODY)
        await spool.close()

    asyncio.run(make())
    (seg,) = segs(path)
    data = bytearray(seg.read_bytes())
    off, *_ = records(seg)[1]
    data[off + 5] = 2  # the version byte; fix the header CRC so the record is intact
    data[off : off + 4] = zlib.crc32(bytes(data[off + 4 : off + HDR_SIZE])).to_bytes(4, "little")
    seg.write_bytes(bytes(data))
    with pytest.raises(SpoolUnavailableError, match="unknown spool format"):
        asyncio.run(ids_after_reopen(path))
    assert seg.read_bytes() == bytes(data)  # untouched

    other = tmp_path / "sqlite"
    other.mkdir()
    (other / "spool.db").write_bytes(b"")
    with pytest.raises(SpoolUnavailableError, match="SQLite"):
        asyncio.run(ids_after_reopen(other))


def test_intact_but_undecodable_envelope_is_quarantined_and_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record whose checksums hold but whose envelope does not decode (a bug, or another
    codec): recover() skips it, keeps a copy with its body, and removes it from the spool."""
    from sluice.spool._segment_rec import STORE, encode_record

    path = tmp_path / "s"

    async def store3() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        try:
            return [await spool.store(sample_envelope(i), BODY) for i in range(3)]
        finally:
            await spool.close()

    a, b, c = asyncio.run(store3())
    (seg,) = segs(path)
    off, _, _, size = next(r for r in records(seg) if r[2] == b)
    data = bytearray(seg.read_bytes())
    mlen = size - HDR_SIZE - len(BODY)
    meta = b"[" + b"x" * (mlen - 1)  # same length, not JSON
    data[off : off + size] = encode_record(STORE, b, 1, meta, body=BODY) + meta + BODY
    seg.write_bytes(bytes(data))

    async def reopen() -> list[int]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        try:
            got = [m.msg_id for m in spool.recover()]
            for _ in range(200):  # recover() queued the removal; wait for its commit
                if b not in spool._index.msgs:
                    break
                await asyncio.sleep(0.025)
            with pytest.raises(UnknownMessageError):
                await spool.load_body(b)
            return got
        finally:
            await spool.close()

    with caplog.at_level(logging.ERROR, logger="sluice.spool"):
        assert asyncio.run(reopen()) == [a, c]
    assert sum("quarantined" in r.getMessage() for r in caplog.records) == 1
    (kept,) = (path / "quarantine").glob("*.bad")
    assert kept.read_bytes().endswith(BODY)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="sluice.spool"):
        assert asyncio.run(ids_after_reopen(path, segment_size=SMALL * 4)) == [a, c]
    assert not any("quarantined" in r.getMessage() for r in caplog.records)


def test_failed_write_is_reported_and_never_recovered(tmp_path: Path) -> None:
    """A write that fails half-way (RLIMIT_FSIZE makes the kernel refuse it with EFBIG):
    the stores in it fail, the segment is sealed where its good records end, the next
    store goes to a new segment, and no part of the failed batch is ever recovered."""
    import resource

    path = tmp_path / "s"

    async def main() -> tuple[list[int], list[int]]:
        spool = await SegmentSpool.open(str(path), segment_size=SMALL * 4)
        try:
            before = [await spool.store(sample_envelope(i), BODY) for i in range(3)]
            (seg,) = segs(path)
            off, _, _, size = records(seg)[-1]
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (off + size + 1000, hard))
            try:
                with pytest.raises(SpoolUnavailableError):
                    await spool.store(sample_envelope(50), BODY)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            after = [await spool.store(sample_envelope(60 + i), BODY) for i in range(3)]
            assert len(segs(path)) == 2  # sealed at the failure, moved on
            assert [m.msg_id for m in spool.recover()] == [*before, *after]
            return before, after
        finally:
            await spool.abandon()

    before, after = asyncio.run(main())
    assert asyncio.run(ids_after_reopen(path, segment_size=SMALL * 4)) == [*before, *after]
