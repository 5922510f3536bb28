"""The demo's injector: the campaign over SMTP to Sluice's listener, with Sluice's own client.

``concurrency`` sessions (``sluice.delivery.open_session`` with a literal route to the
listener, bound to 127.0.0.1 so the seed's ``<source 127.0.0.1>`` applies) take messages from
one shared queue and send them pipelined (MAIL, RCPT, DATA in one write), one transaction
after the other. With ``speed`` > 0 a message is not sent before its turn (``seq / speed``
seconds after the start); 0 means as fast as the listener takes them.

A 250 after the final dot counts as *accepted*. A 4xx (Sluice shedding load, a lost
connection before the dot) puts the message back to be tried again shortly; a 5xx counts as
*refused*, with its reply kept for the summary. A connection lost after the dot (no reply)
is counted as *unknown* and not resent: the demo never makes a duplicate.

Public names: Injector, InjectStats, RETRY_DELAY. Nothing here raises: failures are counted.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from sluice.delivery import ConnectFailure, DeliverySettings, Session, Transfer, open_session
from sluice.delivery.values import TransferRcpt
from sluice.demo._campaign import DemoMessage, render
from sluice.routing import FakeResolver, HostSpec, RouteSettings
from sluice.sched import OutcomeKind, Scope

__all__ = ["RETRY_DELAY", "InjectStats", "Injector"]

#: Seconds before a message that met a temporary failure (or a failed connection) is tried
#: again.
RETRY_DELAY = 0.5
#: Transactions handed to a session per ``deliver`` call (they run one after the other).
BATCH = 10
#: The injecting client's address and EHLO name (the seed's ``<source 127.0.0.1>``).
CLIENT_ADDRESS = "127.0.0.1"
CLIENT_NAME = "injector.demo.test"


@dataclass(slots=True, kw_only=True)
class InjectStats:
    """What the injector has done so far (read by the display at any time)."""

    total: int = 0
    accepted: int = 0
    refused: int = 0
    #: Lost after the final dot: Sluice may or may not have it.
    unknown: int = 0
    #: Temporary failures (each retried).
    retries: int = 0
    #: The first few refusal texts, for the summary.
    refusals: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def injected(self) -> int:
        """Messages whose injection is over (accepted, refused or unknown)."""
        return self.accepted + self.refused + self.unknown

    started_at: float = 0.0
    finished_at: float = 0.0


class Injector:
    """Sends ``messages`` to ``(host, port)`` over ``concurrency`` SMTP sessions."""

    def __init__(
        self,
        messages: Sequence[DemoMessage],
        address: tuple[str, int],
        *,
        concurrency: int = 20,
        speed: float = 0.0,
    ) -> None:
        self.messages = messages
        self.address = address
        self.concurrency = max(1, concurrency)
        self.speed = max(0.0, speed)
        self.stats = InjectStats(total=len(messages))
        #: Sequence numbers of the messages Sluice accepted (250 after the dot).
        self.accepted_seqs: set[int] = set()
        self._todo: collections.deque[DemoMessage] = collections.deque(messages)
        self._waiting = 0  # messages sleeping before a retry
        self._settings = DeliverySettings(
            ehlo_hostname=CLIENT_NAME,
            source_address=CLIENT_ADDRESS,
            connect_timeout=10.0,
            route=RouteSettings(route=HostSpec(name=address[0], port=address[1], literal=True)),
        )
        self._resolver = FakeResolver({})
        self._rng = random.Random(0)
        self._date = email.utils.formatdate(localtime=True)

    async def run(self) -> InjectStats:
        loop = asyncio.get_running_loop()
        self.stats.started_at = loop.time()
        await asyncio.gather(*(self._worker() for _ in range(self.concurrency)))
        self.stats.finished_at = loop.time()
        self.stats.done = True
        return self.stats

    def _take(self, now: float) -> list[DemoMessage] | float | None:
        """Up to :data:`BATCH` messages whose turn has come; a delay to wait; None: no more."""
        todo = self._todo
        if not todo:
            return RETRY_DELAY if self._waiting else None
        if self.speed > 0:
            due = self.stats.started_at + todo[0].seq / self.speed
            if due > now:
                return due - now
        batch = [todo.popleft()]
        while todo and len(batch) < BATCH:
            if self.speed > 0 and self.stats.started_at + todo[0].seq / self.speed > now:
                break
            batch.append(todo.popleft())
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        session: Session | None = None
        try:
            while True:
                taken = self._take(loop.time())
                if taken is None:
                    return
                if isinstance(taken, float):
                    await asyncio.sleep(taken)
                    continue
                if session is None or not session.is_usable:
                    if session is not None:
                        await session.close()
                    opened = await open_session(
                        self.address[0], self._settings, self._resolver, self._rng
                    )
                    if isinstance(opened, ConnectFailure):
                        session = None
                        self._later(taken)
                        await asyncio.sleep(RETRY_DELAY)
                        continue
                    session = opened
                await self._send(session, taken)
        finally:
            if session is not None:
                await session.close()

    async def _send(self, session: Session, batch: list[DemoMessage]) -> None:
        transfers = [
            Transfer(
                msg_id=m.seq,
                sender=m.sender,
                rcpts=(TransferRcpt(index=0, address=m.rcpt),),
                body=render(m, date=self._date),
            )
            for m in batch
        ]
        by_seq = {m.seq: m for m in batch}
        reports = await session.deliver(transfers)
        again: list[DemoMessage] = []
        for report in reports:
            msg = by_seq[report.msg_id]
            outcome = report.results[0].outcome
            if outcome.kind is OutcomeKind.DELIVERED:
                self.stats.accepted += 1
                self.accepted_seqs.add(msg.seq)
            elif report.possible_duplicate:
                self.stats.unknown += 1
            elif outcome.kind is OutcomeKind.TRANSIENT or outcome.scope is Scope.SESSION:
                again.append(msg)
            else:
                self.stats.refused += 1
                if len(self.stats.refusals) < 5:
                    self.stats.refusals.append(f"<{msg.rcpt}>: {outcome.text}")
        if again:
            self._later(again)

    def _later(self, batch: list[DemoMessage]) -> None:
        """Try ``batch`` again after :data:`RETRY_DELAY` seconds."""
        self.stats.retries += len(batch)
        self._waiting += len(batch)

        def back() -> None:
            self._waiting -= len(batch)
            self._todo.extendleft(reversed(batch))

        asyncio.get_running_loop().call_later(RETRY_DELAY, back)
