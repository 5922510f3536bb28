"""The cleanup(8) job of intake: a finished transaction → edited message → spool → hand-off.

:class:`Injector` is shared by every session of every listener. It applies the source
policy at end of data (size, header edits, VMTA check), builds the
:class:`~sluice.message.Envelope`, awaits :meth:`Spool.store` (durable when it returns) and
returns the reply for the client. The hand-off hooks are called by the session *after* the
250 has been written, never before the store returned.

Public names:

- :class:`Transaction`: what a session collected between MAIL and the final dot.
- :class:`Injector`: ``await inject(txn, policy, helo=..., client_ip=...) -> InjectResult``,
  or ``submit(..., done=callback)`` (the same without a coroutine: SMTP sessions use it).
- :class:`Store`: the one spool method the injector uses (``await store(envelope, body)``);
  :class:`NowaitStore`: a store that also has ``store_nowait`` (used when present).
- :class:`InjectResult`: the reply to send, and the id and envelope when stored.
- ``OnAccepted`` / ``OnReceived``: the hand-off and accounting hook types.
- :func:`queues_of`: recipient indices of an envelope grouped by queue name (``domain/vmta``)
  through an injected ``queue_for(domain, vmta)``; :class:`QueueIndex`: an in-memory hand-off
  target keyed by queue name, standing in for the scheduler.

``inject`` never raises for store failures: SpoolFullError → 452 4.3.1, any other failure →
451 4.3.0, and nothing is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import count
from typing import Any, Protocol, cast

from sluice.clock import Clock
from sluice.errors import ReplyHint, SpoolError, SpoolFullError
from sluice.intake.headers import edit_message, received_field
from sluice.intake.policy import SourcePolicy, check_size, check_vmta, rcpt_domain
from sluice.message import Envelope, MessageId, Recipient

__all__ = [
    "STORE_FAILED",
    "STORE_FULL",
    "InjectResult",
    "Injector",
    "NowaitStore",
    "OnAccepted",
    "OnReceived",
    "QueueIndex",
    "Store",
    "Transaction",
    "default_queue_for",
    "queues_of",
    "store_nowait_of",
]

log = logging.getLogger("sluice.intake")


class Store(Protocol):
    """What the injector needs of a spool: a durable store (a :class:`~sluice.spool.Spool`,
    or an intake worker's link to the queue manager)."""

    async def store(self, envelope: Envelope, body: bytes) -> MessageId: ...


class NowaitStore(Protocol):
    """A store that can also answer with a future (no coroutine, no task per message): the
    spools and an intake worker's link to the queue manager. It may raise at once (e.g.
    SpoolUnavailableError) or through the future."""

    def store_nowait(self, envelope: Envelope, body: bytes) -> asyncio.Future[MessageId]: ...


def store_nowait_of(
    store: object,
) -> Callable[[Envelope, bytes], asyncio.Future[MessageId]] | None:
    """``store.store_nowait`` when ``store`` is a :class:`NowaitStore`, else None (a
    duck-typed check: compiled Protocol classes cannot be ``runtime_checkable``)."""
    method: Any = getattr(store, "store_nowait", None)
    return (
        cast("Callable[[Envelope, bytes], asyncio.Future[MessageId]]", method)
        if callable(method)
        else None
    )


#: The hand-off: called once per stored message, after its 250 was written.
OnAccepted = Callable[[MessageId, Envelope], None]
#: The accounting hook for ``r`` records: (id, envelope, stored size in octets).
OnReceived = Callable[[MessageId, Envelope, int], None]
#: Maps (recipient domain, VMTA or None) to a queue name, with ``queue-to`` applied.
QueueFor = Callable[[str, str | None], str]

#: Spool out of space: the client keeps the message and retries (RFC 3463 X.3.1).
STORE_FULL = ReplyHint(code=452, enhanced="4.3.1", text="Insufficient system storage")
#: Any other store failure (RFC 3463 X.3.0).
STORE_FAILED = ReplyHint(code=451, enhanced="4.3.0", text="Local error in processing")
#: A stored message (the session's 250 names the id: ``InjectResult.msg_id``).
STORED_OK = ReplyHint(code=250, enhanced="2.0.0", text="OK queued")


_LONG_LINES_TAGS = (("long-lines", "yes"),)


#: What :meth:`Injector._prepare` hands to the store: (envelope, message bytes, arrival).
_Prepared = tuple[Envelope, bytes, float]


@dataclass(slots=True, kw_only=True)
class Transaction:
    """One mail transaction as collected by a session (mutable while it is collected)."""

    sender: str
    recipients: list[Recipient]
    env_id: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    body_8bit: bool = False
    #: The content has lines over 998 octets (accepted under LongLinePolicy.ACCEPT):
    #: delivery must wrap them. Recorded as the envelope tag ``("long-lines", "yes")``.
    long_lines: bool = False

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        sender: str,
        recipients: list[Recipient],
        env_id: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        body_8bit: bool = False,
        long_lines: bool = False,
    ) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "env_id", env_id)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "body_8bit", body_8bit)
        object.__setattr__(self, "long_lines", long_lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectResult:
    """The outcome of :meth:`Injector.inject`: a refusal, or the stored id and envelope."""

    reply: ReplyHint
    msg_id: MessageId | None = None
    envelope: Envelope | None = None
    size: int = 0

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        reply: ReplyHint,
        msg_id: MessageId | None = None,
        envelope: Envelope | None = None,
        size: int = 0,
    ) -> None:
        object.__setattr__(self, "reply", reply)
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "envelope", envelope)
        object.__setattr__(self, "size", size)


class Injector:
    """Turns finished transactions into stored messages (one instance per daemon).

    ``known_vmtas``: lower-case names of every VMTA and pool, or ``None`` to skip the
    check. ``hostname`` is this server's name in Received and Message-ID fields.
    """

    __slots__ = (
        "_boot",
        "_clock",
        "_counter",
        "_full_since",
        "_hostname",
        "_known",
        "_loop",
        "_spool",
        "_store_nowait",
    )

    def __init__(
        self,
        *,
        spool: Store,
        clock: Clock,
        hostname: str,
        known_vmtas: frozenset[str] | None = None,
        boot_token: str = "0",
    ) -> None:
        self._spool = spool
        self._clock = clock
        self._hostname = hostname
        self._known = known_vmtas
        self._counter = count(1)
        #: Makes Message-IDs unique across restarts (the daemon passes e.g. its start time).
        self._boot = boot_token
        #: When the spool last turned full (0: it is not): one warning per full spell.
        self._full_since = 0.0
        #: The spool's future-returning store, when it has one (no task per message).
        self._store_nowait = store_nowait_of(spool)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def hostname(self) -> str:
        return self._hostname

    def set_known_vmtas(self, known_vmtas: frozenset[str] | None) -> None:
        """Reload: the VMTA and pool names ``X-Virtual-MTA`` may name from now on."""
        self._known = known_vmtas

    async def inject(
        self,
        txn: Transaction,
        content: bytes,
        policy: SourcePolicy,
        *,
        helo: str,
        client_ip: str,
        protocol: str,
        source_type: str = "smtp",
    ) -> InjectResult:
        """Apply ``policy`` to ``content`` (the DATA, CRLF, unstuffed) and store it.
        ``source_type`` is the accounting ``srcType`` (``smtp``, or ``api`` for HTTP)."""
        prepared = self._prepare(
            txn,
            content,
            policy,
            helo=helo,
            client_ip=client_ip,
            protocol=protocol,
            source_type=source_type,
        )
        if type(prepared) is InjectResult:
            return prepared
        envelope, data, now = cast(_Prepared, prepared)
        try:
            msg_id = await self._spool.store(envelope, data)
        except Exception as exc:
            return self._failed(exc, now)
        return self._stored(envelope, len(data), now, msg_id)

    def submit(
        self,
        txn: Transaction,
        content: bytes,
        policy: SourcePolicy,
        *,
        helo: str,
        client_ip: str,
        protocol: str,
        done: Callable[[InjectResult], None],
        source_type: str = "smtp",
    ) -> asyncio.Future[Any] | None:
        """:meth:`inject` without a coroutine: ``done(result)`` is called from the event
        loop (never before this returns) with what ``inject`` would have returned.

        A store with ``store_nowait`` (:class:`NowaitStore`: the spools, an intake
        worker's link to the queue manager) is used without a task per message; any other
        store's coroutine runs in a task. Returns the store's future while it is in flight
        (``done`` runs from its done callback), or None when the result is already known
        (a refusal, or a store that failed at once). Must be called with a running loop."""
        loop = self._loop
        if loop is None or loop.is_closed():  # saved once: asking for it costs a getpid()
            loop = self._loop = asyncio.get_running_loop()
        prepared = self._prepare(
            txn,
            content,
            policy,
            helo=helo,
            client_ip=client_ip,
            protocol=protocol,
            source_type=source_type,
        )
        if type(prepared) is InjectResult:
            loop.call_soon(done, prepared)
            return None
        envelope, data, now = cast(_Prepared, prepared)
        store_nowait = self._store_nowait
        future: asyncio.Future[MessageId]
        try:
            if store_nowait is not None:
                future = store_nowait(envelope, data)
            else:
                future = asyncio.ensure_future(self._spool.store(envelope, data), loop=loop)
        except Exception as exc:
            loop.call_soon(done, self._failed(exc, now))
            return None
        future.add_done_callback(partial(self._store_done, envelope, len(data), now, done))
        return future

    def _store_done(
        self,
        envelope: Envelope,
        size: int,
        now: float,
        done: Callable[[InjectResult], None],
        future: asyncio.Future[MessageId],
    ) -> None:
        if future.cancelled():
            result = InjectResult(reply=STORE_FAILED)  # nothing is acknowledged
        else:
            exc = future.exception()
            if exc is None:
                result = self._stored(envelope, size, now, future.result())
            elif isinstance(exc, Exception):
                result = self._failed(exc, now)
            else:  # KeyboardInterrupt, SystemExit: not ours to map
                raise exc
        done(result)

    def _prepare(
        self,
        txn: Transaction,
        content: bytes,
        policy: SourcePolicy,
        *,
        helo: str,
        client_ip: str,
        protocol: str,
        source_type: str,
    ) -> InjectResult | _Prepared:
        """The work before the store: checks, header edits, the envelope; or the refusal."""
        hint = check_size(policy, len(content))
        if hint is not None:
            return InjectResult(reply=hint)
        now = self._clock.wall()
        received = None
        if policy.add_received_header:
            rcpts = txn.recipients
            received = received_field(
                hostname=self._hostname,
                helo=helo,
                client_ip=client_ip,
                protocol=protocol,
                now=now,
                hide_source=policy.hide_message_source,
                recipient=rcpts[0].address if len(rcpts) == 1 else None,
            )
        message_id = None
        if policy.add_message_id_header:
            message_id = f"<{self._boot}.{next(self._counter)}@{self._hostname}>"
        # The one copy: the spool takes a single bytes object.
        data, vmta, job_id, header_env_id = edit_message(
            content, policy=policy, received=received, now=now, message_id=message_id
        )
        if vmta is not None:
            hint = check_vmta(vmta, self._known)
            if hint is not None:
                return InjectResult(reply=hint)
        else:
            vmta = policy.default_virtual_mta
        envelope = Envelope(
            sender=txn.sender,
            recipients=tuple(txn.recipients),
            vmta=vmta,
            job_id=job_id,
            env_id=txn.env_id if txn.env_id is not None else header_env_id,
            ret=txn.ret,
            source_ip=client_ip,
            source_helo=helo,
            arrival=now,
            smtputf8=txn.smtputf8,
            body_8bit=txn.body_8bit,
            tags=_LONG_LINES_TAGS if txn.long_lines else (),
            source_type=source_type,
        )
        return envelope, data, now

    def _failed(self, exc: Exception, now: float) -> InjectResult:
        """A store that raised: the refusal (nothing is acknowledged)."""
        if isinstance(exc, SpoolFullError):
            if not self._full_since:
                self._full_since = now
                log.warning(
                    "spool full (%s): refusing mail with 452 4.3.1 until space returns", exc
                )
            return InjectResult(reply=STORE_FULL)
        if isinstance(exc, SpoolError):
            log.warning("spool store failed: %s", exc)
            return InjectResult(reply=STORE_FAILED)
        # A bug in the store must not become a 250 or kill the session.
        log.error("spool store raised unexpectedly", exc_info=exc)
        return InjectResult(reply=STORE_FAILED)

    def _stored(self, envelope: Envelope, size: int, now: float, msg_id: MessageId) -> InjectResult:
        if self._full_since:
            log.info("spool accepts mail again after %.0fs full", now - self._full_since)
            self._full_since = 0.0
        return InjectResult(reply=STORED_OK, msg_id=msg_id, envelope=envelope, size=size)


def queues_of(envelope: Envelope, queue_for: QueueFor) -> dict[str, list[int]]:
    """Recipient indices of ``envelope`` grouped by queue name (``queue_for`` decides)."""
    out: dict[str, list[int]] = {}
    vmta = envelope.vmta
    for index, rcpt in enumerate(envelope.recipients):
        domain = rcpt_domain(rcpt.address) or ""
        out.setdefault(queue_for(domain, vmta), []).append(index)
    return out


def default_queue_for(domain: str, vmta: str | None) -> str:
    """``domain/vmta`` with no ``queue-to`` rewriting; ``{default}`` for the default VMTA."""
    return f"{domain}/{vmta or '{default}'}"


class QueueIndex:
    """An in-memory queue index (queue name → [(id, rcpt index)]) usable as ``OnAccepted``.

    Stands in for the scheduler's hand-off until it exists; recovery tests fill one from
    :meth:`Spool.recover` the same way.
    """

    __slots__ = ("_queue_for", "queues")

    def __init__(self, queue_for: QueueFor = default_queue_for) -> None:
        self._queue_for = queue_for
        self.queues: dict[str, list[tuple[MessageId, int]]] = {}

    def __call__(self, msg_id: MessageId, envelope: Envelope) -> None:
        for name, indices in queues_of(envelope, self._queue_for).items():
            self.queues.setdefault(name, []).extend((msg_id, i) for i in indices)

    def count(self) -> int:
        return sum(len(v) for v in self.queues.values())
