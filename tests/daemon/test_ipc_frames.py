"""The manager ↔ worker link (sluice.daemon.ipc) over a real AF_UNIX socket pair."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from sluice.daemon.ipc import HEADER, MAX_FRAME, FrameProtocol, Kind

Frame = tuple[Kind, int, bytes]


class _End:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.lost: list[Exception | None] = []
        self.got = asyncio.Event()

    def on_frame(self, kind: Kind, req: int, payload: bytes) -> None:
        self.frames.append((kind, req, payload))
        self.got.set()

    def on_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.got.set()


async def _link(sock: socket.socket, end: _End) -> FrameProtocol:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_unix_connection(
        lambda: FrameProtocol(end.on_frame, end.on_lost), sock=sock
    )
    return proto


async def _until(end: _End, count: int) -> None:
    while len(end.frames) + len(end.lost) < count:
        end.got.clear()
        await asyncio.wait_for(end.got.wait(), 5)


def test_frames_cross_in_order_both_ways() -> None:
    async def main() -> None:
        a_sock, b_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a_end, b_end = _End(), _End()
        a = await _link(a_sock, a_end)
        b = await _link(b_sock, b_end)
        big = bytes(range(256)) * 4096  # 1 MiB: arrives in many reads
        a.send(Kind.STORE, 1, b"first")
        a.send(Kind.STORE, 2, big)
        a.send(Kind.BUSY, 0)
        b.send(Kind.STORED, 1, b"42")
        await _until(b_end, 3)
        await _until(a_end, 1)
        assert b_end.frames == [
            (Kind.STORE, 1, b"first"),
            (Kind.STORE, 2, big),
            (Kind.BUSY, 0, b""),
        ]
        assert a_end.frames == [(Kind.STORED, 1, b"42")]
        a.close()
        await _until(b_end, 4)
        assert b_end.lost == [None]

    uvloop.run(main())


def test_a_frame_split_byte_by_byte_is_reassembled() -> None:
    async def main() -> None:
        raw, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        end = _End()
        await _link(theirs, end)
        wire = HEADER.pack(5, Kind.READY, 7) + b"hello" + HEADER.pack(0, Kind.RELOAD, 1)
        raw.setblocking(False)
        for i in range(len(wire)):
            raw.send(wire[i : i + 1])
            await asyncio.sleep(0)
        await _until(end, 2)
        assert end.frames == [(Kind.READY, 7, b"hello"), (Kind.RELOAD, 1, b"")]
        raw.close()

    uvloop.run(main())


@pytest.mark.parametrize(
    "wire",
    [HEADER.pack(MAX_FRAME + 1, Kind.STORE, 1), HEADER.pack(0, 99, 1)],
    ids=["oversized", "unknown-kind"],
)
def test_a_malformed_stream_breaks_the_link(wire: bytes) -> None:
    async def main() -> None:
        raw, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        end = _End()
        proto = await _link(theirs, end)
        raw.send(wire + HEADER.pack(0, Kind.BUSY, 0))
        await _until(end, 1)
        assert end.frames == []
        assert len(end.lost) == 1
        assert isinstance(end.lost[0], ValueError)
        assert proto.closed
        proto.send(Kind.STORED, 1, b"1")  # sending on a broken link is a no-op
        raw.close()

    uvloop.run(main())


def test_a_store_payload_round_trips_every_envelope_field() -> None:
    from sluice.daemon.ipc import decode_store, encode_store
    from sluice.message import Envelope, Notify, Recipient

    envelope = Envelope(
        sender="bounce@x.test",
        recipients=(
            Recipient(address="a@y.test", notify=Notify.SUCCESS | Notify.DELAY, orcpt="rfc822;a@y"),
            Recipient(address="b@y.test"),
        ),
        vmta="pool-a",
        job_id="job7",
        env_id="env-1",
        ret="HDRS",
        source_ip="127.0.0.1",
        source_helo="client.test",
        source_type="smtp",
        auth_user="user",
        arrival=1234.5,
        smtputf8=True,
        body_8bit=True,
        tags=(("long-lines", "yes"),),
    )
    content = b"Subject: x\r\n\r\nbody\r\n"
    assert decode_store(encode_store(envelope, content)) == (envelope, content)


def test_listeners_on_both_wildcards_share_a_port() -> None:
    """``[::]:N`` and ``0.0.0.0:N`` together, as asyncio allows in-process (IPV6_V6ONLY)."""
    from sluice.daemon.workers import bind_listener

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        v6 = bind_listener("::", 0, 16)
    except OSError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    try:
        port = v6.getsockname()[1]
        v4 = bind_listener("0.0.0.0", port, 16)
        v4.close()
    finally:
        v6.close()


def test_remote_store_futures_follow_the_managers_answers() -> None:
    from sluice.daemon.ipc import decode_store
    from sluice.daemon.worker_main import RemoteStore
    from sluice.errors import SpoolFullError, SpoolUnavailableError
    from sluice.intake.inject import store_nowait_of
    from sluice.message import Envelope, Recipient

    envelope = Envelope(sender="a@x.test", recipients=(Recipient(address="b@y.test"),))

    async def main() -> None:
        store = RemoteStore()
        assert store_nowait_of(store) is not None  # the injector takes the task-free path
        with pytest.raises(SpoolUnavailableError):
            store.store_nowait(envelope, b"x")  # no link yet: refused at once
        w_sock, m_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        manager = _End()
        manager_link = await _link(m_sock, manager)
        store.link = await _link(w_sock, _End())
        first = store.store_nowait(envelope, b"one")
        second = store.store_nowait(envelope, b"two")
        await _until(manager, 2)
        assert [(k, r) for k, r, _ in manager.frames] == [(Kind.STORE, 1), (Kind.STORE, 2)]
        assert decode_store(manager.frames[1][2]) == (envelope, b"two")
        assert store.pending == 2
        store.answer(Kind.FULL, 2, b"disk full")
        store.answer(Kind.STORED, 1, b"41")
        assert await first == 41
        with pytest.raises(SpoolFullError):
            await second
        assert store.pending == 0
        store.link.close()
        manager_link.close()

    uvloop.run(main())
