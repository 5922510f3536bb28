"""ClientProtocol's reply waits on a fake clock: one deadline timer per connection, left armed
between waits, times every wait out exactly at its own deadline (earlier or later than the
timer's), and is dropped with the connection; replies are collected in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dlv_helpers import run

from sluice import smtp
from sluice.delivery._protocol import ClientProtocol, Wait


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ClockLoop:
    """What ClientProtocol asks of its loop, on a clock the test moves; futures are real."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        return self.call_at(self.now + delay, callback, *args)

    @property
    def live(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled and t.when >= 0]

    async def advance(self, to: float) -> None:
        """Move the clock to ``to``, firing due timers in order, then let tasks run."""
        while True:
            due = sorted((t for t in self.live if t.when <= to), key=lambda t: t.when)
            if not due:
                break
            timer = due[0]
            self.now = timer.when
            timer.when = -1.0  # fired
            timer.callback(*timer.args)
        self.now = to
        for _ in range(3):
            await asyncio.sleep(0)


class Wire:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass


def greeted(clock: ClockLoop) -> ClientProtocol:
    proto = ClientProtocol(clock)  # type: ignore[arg-type]
    proto.connection_made(Wire())  # type: ignore[arg-type]
    proto.data_received(b"220 mx ESMTP\r\n")
    proto.write(proto.conn.send(smtp.Ehlo(domain="c.test")))
    proto.data_received(b"250-mx\r\n250 PIPELINING\r\n")
    assert [r.code for r in proto.replies] == [220, 250]
    proto.replies.clear()
    return proto


async def started(proto: ClientProtocol, count: int, timeout: float) -> asyncio.Task[Wait]:
    task = asyncio.create_task(proto.wait_replies(count, timeout))
    await asyncio.sleep(0)
    return task


def test_a_shorter_wait_after_a_longer_one_times_out_at_its_own_deadline() -> None:
    async def go() -> None:
        clock = ClockLoop()
        proto = greeted(clock)
        proto.write(proto.conn.send(smtp.Rset()))
        long = await started(proto, 1, 600.0)
        proto.data_received(b"250 2.0.0 Ok\r\n")
        assert await long is Wait.DONE
        assert proto.replies.pop().code == 250
        await clock.advance(1.0)
        proto.write(proto.conn.send(smtp.Rset()))
        short = await started(proto, 1, 5.0)
        assert [t.when for t in clock.live] == [6.0]  # re-armed for the earlier deadline
        await clock.advance(5.9)
        assert not short.done()
        await clock.advance(6.0)
        assert short.done()
        assert short.result() is Wait.TIMEOUT

    run(go())


def test_a_longer_wait_outlives_the_timer_armed_for_an_earlier_deadline() -> None:
    async def go() -> None:
        clock = ClockLoop()
        proto = greeted(clock)
        proto.write(proto.conn.send(smtp.Rset()))
        first = await started(proto, 1, 1.0)
        proto.data_received(b"250 2.0.0 Ok\r\n")
        assert await first is Wait.DONE
        await clock.advance(0.5)
        proto.write(proto.conn.send(smtp.Rset()))
        second = await started(proto, 2, 3.0)  # deadline 3.5; the timer stays at 1.0
        assert [t.when for t in clock.live] == [1.0]
        await clock.advance(1.0)
        assert not second.done()
        assert [t.when for t in clock.live] == [3.5]  # fired early: re-armed for the wait
        await clock.advance(3.49)
        assert not second.done()
        await clock.advance(3.5)
        assert second.result() is Wait.TIMEOUT

    run(go())


def test_waits_answered_in_time_share_one_timer_and_it_disarms_when_idle() -> None:
    async def go() -> None:
        clock = ClockLoop()
        proto = greeted(clock)
        for i in range(50):
            await clock.advance(i * 0.01)
            proto.write(proto.conn.send(smtp.Rset()))
            wait = await started(proto, 1, 300.0)
            proto.data_received(b"250 2.0.0 Ok\r\n")
            assert await wait is Wait.DONE
            proto.replies.clear()
        assert len(clock.timers) == 1
        await clock.advance(1000.0)  # fires with no wait: nothing happens, nothing re-armed
        assert clock.live == []
        proto.write(proto.conn.send(smtp.Rset()))
        late = await started(proto, 1, 2.0)
        await clock.advance(1002.0)
        assert late.result() is Wait.TIMEOUT

    run(go())


def test_a_lost_connection_ends_the_wait_and_drops_the_timer() -> None:
    async def go() -> None:
        clock = ClockLoop()
        proto = greeted(clock)
        proto.write(proto.conn.send(smtp.Rset()))
        wait = await started(proto, 1, 300.0)
        proto.connection_lost(None)
        assert await wait is Wait.CLOSED
        assert clock.live == []
        assert await proto.wait_replies(1, 300.0) is Wait.CLOSED

    run(go())


def test_replies_arrive_as_replies_in_batches_and_a_421_closes() -> None:
    async def go() -> None:
        clock = ClockLoop()
        proto = greeted(clock)
        conn = proto.conn
        group = [smtp.MailFrom(address="a@x.test"), smtp.RcptTo(address="b@y.test"), smtp.Data()]
        proto.write(b"".join(conn.send(ev) for ev in group))
        wait = await started(proto, 3, 300.0)
        proto.data_received(b"250 2.1.0 Ok\r\n250 2.1.5")
        assert not wait.done()
        proto.data_received(b" Ok\r\n421 4.3.2 bye\r\n")
        assert await wait is Wait.DONE
        assert [(r.code, str(r.enhanced)) for r in proto.replies] == [
            (250, "2.1.0"),
            (250, "2.1.5"),
            (421, "4.3.2"),
        ]
        assert proto.closed
        assert proto.closed_reason == "the server closed the session"

    run(go())
