"""The conformance suite every Spool implementation must pass (trio ``_check_streams`` style).

Each check is an ``async`` function taking an ``open_spool`` factory that opens (or
re-opens) the implementation on the same backing store each time it is called. A spool
returned by it must also have ``abandon()``: stop as a crash would, so the next
``open_spool()`` sees only what was durable. ``CHECKS`` lists them all (tests parametrize
over it for one result per check); ``check_spool`` runs them in order.

Public names: CrashableSpool, SpoolOpener, CHECKS, check_spool, sample_envelope.
Raises: AssertionError when an implementation breaks a rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from sluice.errors import SpoolUnavailableError
from sluice.message import Envelope, MessageId, Notify, RcptState, Recipient
from sluice.spool.base import (
    FRESH,
    RcptProgress,
    RcptUpdate,
    Spool,
    SpooledMessage,
    UnknownMessageError,
)

__all__ = ["CHECKS", "CrashableSpool", "SpoolOpener", "check_spool", "sample_envelope"]


class CrashableSpool(Spool, Protocol):
    """A Spool that a test can stop as a crash would."""

    async def abandon(self) -> None: ...


SpoolOpener = Callable[[], Awaitable[CrashableSpool]]


def sample_envelope(n: int = 0, *, rcpts: int = 1) -> Envelope:
    """A typical bulk envelope (distinct per ``n``)."""
    return Envelope(
        sender=f"bounces+{n}@sender.example",
        recipients=tuple(
            Recipient(address=f"user{n}.{i}@dest{i % 3}.example") for i in range(rcpts)
        ),
        vmta="vmta-a",
        job_id="job-7",
        source_ip="127.0.0.1",
        source_helo="injector.local",
        arrival=1_800_000_000.0 + n,
    )


def _rich_envelope() -> Envelope:
    return Envelope(
        sender="jörg@bücher.example",
        recipients=(
            Recipient(address="a@x.example"),
            Recipient(
                address="ü@y.example",
                notify=Notify.SUCCESS | Notify.FAILURE | Notify.DELAY,
                orcpt="rfc822;Ü@y.example",
            ),
            Recipient(address="c@z.example", notify=Notify.NEVER),
        ),
        vmta=None,
        job_id='job "quoted" ,[]',
        env_id="ENV-1+2B",
        ret="HDRS",
        source_ip="::1",
        source_helo="[IPv6:::1]",
        source_type="api",
        auth_user="alice",
        arrival=1_800_000_123.25,
        smtputf8=True,
        body_8bit=True,
        tags=(("queue-domain", "x.example"), ("k", "")),
    )


_BODIES = (
    b"",
    b"Subject: hi\r\n\r\nbody\r\n.\r\n..dot\r\n",
    bytes(range(256)) * 4,
    b"\r\n.\r\n" * 10,
    bytes((i * 7919) % 251 for i in range(1 << 20)),  # 1 MiB, not compressible by chance
)


async def _recovered(open_spool: SpoolOpener, *, crash: bool) -> dict[MessageId, SpooledMessage]:
    """Map of id → SpooledMessage after closing (or crashing) and reopening."""
    spool = await open_spool()
    try:
        return {m.msg_id: m for m in spool.recover()}
    finally:
        await (spool.abandon() if crash else spool.close())


async def check_round_trip(open_spool: SpoolOpener) -> None:
    """Bodies come back byte-exact; ids are distinct positive integers."""
    spool = await open_spool()
    try:
        ids = [await spool.store(sample_envelope(i), body) for i, body in enumerate(_BODIES)]
        assert len(set(ids)) == len(ids), ids
        assert all(isinstance(i, int) and i > 0 for i in ids), ids
        for mid, body in zip(ids, _BODIES, strict=True):
            got = await spool.load_body(mid)
            assert bytes(got) == body, f"body of {mid} differs"
        got = await spool.load_body(ids[1])
        assert bytes(got) == _BODIES[1], "a second load differs"
    finally:
        await spool.close()


async def check_envelope_fidelity(open_spool: SpoolOpener) -> None:
    """Every envelope field survives a restart; unmarked recipients recover as FRESH."""
    spool = await open_spool()
    try:
        rich = _rich_envelope()
        mid = await spool.store(rich, b"x")
        plain = await spool.store(sample_envelope(1, rcpts=2), b"y")
    finally:
        await spool.close()
    got = await _recovered(open_spool, crash=False)
    m = got[mid]
    assert m.envelope == rich, (m.envelope, rich)
    assert m.rcpts == (FRESH, FRESH, FRESH)
    assert got[plain].envelope == sample_envelope(1, rcpts=2)


async def check_mark_persists(open_spool: SpoolOpener) -> None:
    """Deferrals and final states are durable when mark returns; the latest mark wins."""
    spool = await open_spool()
    try:
        a = await spool.store(sample_envelope(1, rcpts=3), b"a")
        b = await spool.store(sample_envelope(2), b"b")
        await spool.mark(
            [
                RcptUpdate(msg_id=a, rcpt_index=0, state=RcptState.DELIVERED, attempts=1),
                RcptUpdate(
                    msg_id=a,
                    rcpt_index=2,
                    state=RcptState.QUEUED,
                    attempts=1,
                    next_attempt=1_800_000_900.5,
                    detail="451 4.7.1 try later",
                ),
                RcptUpdate(msg_id=b, rcpt_index=0, state=RcptState.QUEUED, attempts=1),
            ]
        )
        await spool.mark(
            [
                RcptUpdate(
                    msg_id=b,
                    rcpt_index=0,
                    state=RcptState.BOUNCED,
                    attempts=2,
                    detail="550 5.1.1 unknown user",
                )
            ]
        )
        await spool.mark([])
    finally:
        await spool.abandon()
    got = await _recovered(open_spool, crash=True)
    assert got[a].rcpts == (
        RcptProgress(state=RcptState.DELIVERED, attempts=1),
        FRESH,
        RcptProgress(
            state=RcptState.QUEUED,
            attempts=1,
            next_attempt=1_800_000_900.5,
            detail="451 4.7.1 try later",
        ),
    )
    assert got[b].rcpts == (
        RcptProgress(state=RcptState.BOUNCED, attempts=2, detail="550 5.1.1 unknown user"),
    )


async def check_mark_ignores_unknown(open_spool: SpoolOpener) -> None:
    """Marks for removed or never-stored messages, or past the last recipient, do nothing."""
    spool = await open_spool()
    try:
        a = await spool.store(sample_envelope(1), b"a")
        gone = await spool.store(sample_envelope(2), b"b")
        await spool.remove(gone)
        await spool.mark(
            [
                RcptUpdate(msg_id=gone, rcpt_index=0, state=RcptState.DELIVERED, attempts=1),
                RcptUpdate(msg_id=10**12, rcpt_index=0, state=RcptState.DELIVERED, attempts=1),
                RcptUpdate(msg_id=a, rcpt_index=5, state=RcptState.DELIVERED, attempts=1),
            ]
        )
        got = {m.msg_id: m for m in spool.recover()}
        assert set(got) == {a}, set(got)
        assert got[a].rcpts == (FRESH,)
    finally:
        await spool.close()


async def check_remove(open_spool: SpoolOpener) -> None:
    """A removed message is gone for load_body and recover, durably; remove is idempotent."""
    spool = await open_spool()
    try:
        keep = await spool.store(sample_envelope(1), b"keep")
        drop = await spool.store(sample_envelope(2), b"drop")
        await spool.mark(
            [RcptUpdate(msg_id=drop, rcpt_index=0, state=RcptState.DELIVERED, attempts=1)]
        )
        await spool.remove(drop)
        await spool.remove(drop)
        await spool.remove(10**12)
        try:
            await spool.load_body(drop)
        except UnknownMessageError:
            pass
        else:
            raise AssertionError("load_body of a removed message succeeded")
    finally:
        await spool.abandon()
    got = await _recovered(open_spool, crash=True)
    assert set(got) == {keep}, set(got)


async def check_load_unknown(open_spool: SpoolOpener) -> None:
    """load_body of an id never stored raises UnknownMessageError (a SpoolUnavailableError)."""
    spool = await open_spool()
    try:
        for mid in (10**12, 0):
            try:
                await spool.load_body(mid)
            except UnknownMessageError:
                pass
            else:
                raise AssertionError(f"load_body({mid}) succeeded")
        assert issubclass(UnknownMessageError, SpoolUnavailableError)
    finally:
        await spool.close()


async def check_concurrent_stores(open_spool: SpoolOpener) -> None:
    """Hundreds of concurrent stores and loads: distinct ids, exact bodies, all recovered."""
    n = 300
    spool = await open_spool()
    try:
        bodies = [b"msg %d " % i * (1 + i % 50) for i in range(n)]
        ids = await asyncio.gather(
            *(spool.store(sample_envelope(i), body) for i, body in enumerate(bodies))
        )
        assert len(set(ids)) == n
        loaded = await asyncio.gather(*(spool.load_body(mid) for mid in ids))
        assert [bytes(b) for b in loaded] == bodies
    finally:
        await spool.abandon()
    got = await _recovered(open_spool, crash=True)
    assert set(ids) <= set(got)
    for i, mid in enumerate(ids):
        assert got[mid].envelope == sample_envelope(i)


async def check_crash_keeps_acknowledged(open_spool: SpoolOpener) -> None:
    """After a crash every acknowledged message is back; ids are never reused."""
    spool = await open_spool()
    try:
        ids = [await spool.store(sample_envelope(i), b"body %d" % i) for i in range(20)]
    finally:
        await spool.abandon()
    spool = await open_spool()
    try:
        got = {m.msg_id: m for m in spool.recover()}
        assert set(ids) <= set(got)
        for i, mid in enumerate(ids):
            assert bytes(await spool.load_body(mid)) == b"body %d" % i
        await spool.remove(ids[-1])
    finally:
        await spool.abandon()
    spool = await open_spool()
    try:
        new = await spool.store(sample_envelope(99), b"new")
        assert new > max(ids), (new, ids)
    finally:
        await spool.close()


async def check_recover_snapshot(open_spool: SpoolOpener) -> None:
    """recover yields id order from one snapshot: a store during the scan is not in it."""
    spool = await open_spool()
    try:
        ids = [await spool.store(sample_envelope(i), b"b") for i in range(5)]
        it = spool.recover()
        first = next(it)
        late = await spool.store(sample_envelope(9), b"late")
        rest = [m.msg_id for m in it]
        assert [first.msg_id, *rest] == ids, ([first.msg_id, *rest], ids)
        assert late not in rest
        assert [m.msg_id for m in spool.recover()] == [*ids, late]
    finally:
        await spool.close()


async def check_closed_spool_refuses(open_spool: SpoolOpener) -> None:
    """After close every call raises SpoolUnavailableError; close twice is fine."""
    spool = await open_spool()
    mid = await spool.store(sample_envelope(1), b"b")
    await spool.close()
    await spool.close()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: spool.store(sample_envelope(2), b"b"),
        lambda: spool.load_body(mid),
        lambda: spool.remove(mid),
        lambda: spool.mark(
            [RcptUpdate(msg_id=mid, rcpt_index=0, state=RcptState.DELIVERED, attempts=1)]
        ),
    ]
    for call in calls:
        try:
            await call()
        except SpoolUnavailableError:
            pass
        else:
            raise AssertionError("a closed spool accepted a call")
    try:
        list(spool.recover())
    except SpoolUnavailableError:
        pass
    else:
        raise AssertionError("a closed spool recovered")


CHECKS: tuple[Callable[[SpoolOpener], Coroutine[Any, Any, None]], ...] = (
    check_round_trip,
    check_envelope_fidelity,
    check_mark_persists,
    check_mark_ignores_unknown,
    check_remove,
    check_load_unknown,
    check_concurrent_stores,
    check_crash_keeps_acknowledged,
    check_recover_snapshot,
    check_closed_spool_refuses,
)


async def check_spool(new_store: Callable[[], SpoolOpener]) -> None:
    """Run every conformance check, each on a fresh, empty store from ``new_store()``."""
    for check in CHECKS:
        await check(new_store())
