"""End of data without a task: the session hands the message to ``Injector.submit`` and
answers from the store's future; it stops reading only when bytes arrive behind the dot.

In-process sessions on a recording transport (every write, pause and resume is visible),
with stores whose futures the test resolves.
"""

from __future__ import annotations

import asyncio

import pytest

from sluice.clock import FakeClock
from sluice.errors import SpoolFullError, SpoolUnavailableError
from sluice.intake.inject import Injector, InjectResult, Transaction
from sluice.intake.listener import IntakeServer
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.intake.session import SmtpSession
from sluice.message import Envelope, MessageId, Recipient


class _Transport:
    """Records what the session does to its socket."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.log.append("pause")

    def resume_reading(self) -> None:
        self.log.append("resume")

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def replies(self) -> list[bytes]:
        return [line[:3] for line in self.written.split(b"\r\n") if line[3:4] == b" "]


class _FutureStore:
    """A store with ``store_nowait``: the test resolves each future."""

    def __init__(self, fail_at_once: Exception | None = None) -> None:
        self.pending: list[asyncio.Future[MessageId]] = []
        self.stored: list[tuple[Envelope, bytes]] = []
        self.fail_at_once = fail_at_once

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        raise AssertionError("the injector must use store_nowait")

    def store_nowait(self, envelope: Envelope, body: bytes) -> asyncio.Future[MessageId]:
        if self.fail_at_once is not None:
            raise self.fail_at_once
        self.stored.append((envelope, body))
        future: asyncio.Future[MessageId] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future


class _AsyncStore:
    """A store with only the coroutine: the injector runs it in a task."""

    def __init__(self) -> None:
        self.count = 0

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        await asyncio.sleep(0)
        self.count += 1
        return 100 + self.count


def _server(store: object) -> IntakeServer:
    clock = FakeClock()
    return IntakeServer(
        injector=Injector(spool=store, clock=clock, hostname="mta.test"),  # type: ignore[arg-type]
        policies=SourcePolicyMap(),
        clock=clock,
    )


ENVELOPE = b"EHLO c.test\r\n", b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@y.test>\r\n", b"DATA\r\n"
CONTENT = b"Subject: s\r\n\r\nbody\r\n.\r\n"


def _open(server: IntakeServer) -> tuple[SmtpSession, _Transport]:
    transport = _Transport()
    session = SmtpSession(server)
    session.connection_made(transport)  # type: ignore[arg-type]
    for line in ENVELOPE:
        session.data_received(line)
    return session, transport


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_lock_step_250_only_after_the_store_and_no_pause() -> None:
    async def main() -> None:
        store = _FutureStore()
        server = _server(store)
        session, transport = _open(server)
        session.data_received(CONTENT)
        await _turns()
        assert transport.replies() == [b"220", b"250", b"250", b"250", b"354"]
        assert len(store.pending) == 1
        assert server.tasks == {store.pending[0]}  # tracked for shutdown
        store.pending[0].set_result(7)
        await _turns()
        assert transport.written.endswith(b"250 2.0.0 Ok: queued as 7\r\n")
        assert transport.log == []  # nothing came behind the dot: never paused
        assert not server.tasks
        session.data_received(b"QUIT\r\n")
        assert transport.replies()[-1] == b"221"
        assert transport.closed
        session.connection_lost(None)
        [(envelope, body)] = store.stored
        assert envelope.recipients == (Recipient(address="b@y.test"),)
        assert body.startswith(b"Received: from c.test ([127.0.0.1])\r\n\tby mta.test with ESMTP")
        assert body.endswith(b"Subject: s\r\n\r\nbody\r\n")

    asyncio.run(main())


def test_bytes_behind_the_dot_pause_reading_until_the_answer() -> None:
    async def main() -> None:
        store = _FutureStore()
        server = _server(store)
        session, transport = _open(server)
        session.data_received(CONTENT + b"RSET\r\n")
        session.data_received(b"NOOP\r\n")  # already paused: no second pause
        await _turns()
        assert transport.log == ["pause"]
        assert transport.replies()[-1] == b"354"
        store.pending[0].set_result(8)
        await _turns()
        # The 250 first, then the commands that waited behind the dot, in order.
        assert transport.replies()[-3:] == [b"250", b"250", b"250"]
        assert b"queued as 8\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n" in transport.written
        assert transport.log == ["pause", "resume"]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("fail", "at_once", "reply"),
    [
        (SpoolFullError("full"), False, b"452 4.3.1 "),
        (SpoolUnavailableError("gone"), False, b"451 4.3.0 "),
        (RuntimeError("bug"), False, b"451 4.3.0 "),
        (SpoolUnavailableError("no link"), True, b"451 4.3.0 "),
    ],
)
def test_store_failures_are_answered_and_the_session_goes_on(
    fail: Exception, at_once: bool, reply: bytes
) -> None:
    async def main() -> None:
        store = _FutureStore(fail_at_once=fail if at_once else None)
        server = _server(store)
        session, transport = _open(server)
        session.data_received(CONTENT)
        await _turns()
        if not at_once:
            store.pending[0].set_exception(fail)
            await _turns()
        assert reply in transport.written
        assert b"queued" not in transport.written
        session.data_received(b"NOOP\r\n")
        assert transport.replies()[-1] == b"250"

    asyncio.run(main())


def test_a_store_without_store_nowait_runs_in_a_task() -> None:
    async def main() -> None:
        store = _AsyncStore()
        server = _server(store)
        session, transport = _open(server)
        session.data_received(CONTENT)
        await _turns(5)
        assert transport.written.endswith(b"250 2.0.0 Ok: queued as 101\r\n")
        assert not server.tasks

    asyncio.run(main())


def test_submit_never_answers_before_it_returns() -> None:
    async def main() -> None:
        injector = Injector(spool=_FutureStore(), clock=FakeClock(), hostname="mta.test")
        got: list[InjectResult] = []
        txn = Transaction(sender="a@x.test", recipients=[Recipient(address="b@y.test")])
        # A refusal (over max-message-size) is known at once, yet comes from the loop.
        small = SourcePolicy(max_message_size=10)
        future = injector.submit(
            txn,
            b"x" * 11,
            small,
            helo="h",
            client_ip="192.0.2.1",
            protocol="ESMTP",
            done=got.append,
        )
        assert future is None
        assert got == []
        await _turns(1)
        assert [r.reply.code for r in got] == [552]

    asyncio.run(main())


def test_inject_and_submit_agree() -> None:
    async def main() -> None:
        results: list[InjectResult] = []
        for submit in (False, True):
            store = _AsyncStore()
            injector = Injector(spool=store, clock=FakeClock(), hostname="mta.test")
            txn = Transaction(sender="a@x.test", recipients=[Recipient(address="b@y.test")])
            args = (txn, b"Subject: s\r\n\r\nbody\r\n", SourcePolicy())
            if submit:
                future = injector.submit(
                    *args, helo="h", client_ip="192.0.2.1", protocol="ESMTP", done=results.append
                )
                assert future is not None
                await future
                await _turns(1)
            else:
                results.append(
                    await injector.inject(*args, helo="h", client_ip="192.0.2.1", protocol="ESMTP")
                )
        assert results[0] == results[1]
        assert results[0].msg_id == 101

    asyncio.run(main())
