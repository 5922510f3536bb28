"""Framed messages between the queue manager and its intake worker processes.

One ``AF_UNIX`` stream socket pair per worker carries length-prefixed frames: a 9-byte header
(payload length, frame kind, request number) and the payload. Both ends run a
:class:`FrameProtocol` on their event loop; frames written in one loop iteration leave in
one ``write`` (a worker storing twenty messages at once costs one system call, not twenty).

Public names:

- :class:`Kind`: the frame kinds (``STORE`` and its answers, ``BUSY``, ``RELOAD``, ``READY``).
- :class:`FrameProtocol`: the asyncio Protocol for one end; ``send(kind, req, payload)``.
- :data:`HEADER`: the header layout (``struct`` format ``!IBI``).
- :data:`MAX_FRAME`: the largest payload accepted (a frame beyond it closes the link).
- :func:`encode_store` / :func:`decode_store`: a STORE payload (envelope and content).

Nothing here raises to callers; a malformed stream closes the link and reports it through
``on_lost``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import pickle
import struct
from collections.abc import Callable
from typing import Any, cast

from sluice.message import Envelope, Notify, Recipient

__all__ = [
    "HEADER",
    "MAX_FRAME",
    "FrameProtocol",
    "Kind",
    "decode_store",
    "encode_store",
]

log = logging.getLogger("sluice.daemon")

#: Payload length (u32), kind (u8), request number (u32), network byte order.
HEADER = struct.Struct("!IBI")
#: Messages are capped at 50 MiB by intake (listener.DEFAULT_MESSAGE_SIZE_CAP); a frame
#: carries one message and its envelope, so 64 MiB bounds any honest frame.
MAX_FRAME = 64 * 1024 * 1024


class Kind(enum.IntEnum):
    """What a frame carries."""

    #: worker → manager: store (envelope, content); payload is a pickled pair.
    STORE = 1
    #: manager → worker: stored; payload is the queue id in ASCII digits.
    STORED = 2
    #: manager → worker: the spool is full (452 4.3.1); payload is the reason.
    FULL = 3
    #: manager → worker: the store failed (451 4.3.0); payload is the reason.
    FAILED = 4
    #: manager → worker: the machine is over ``max-cpu-usage`` (payload b"1") or not (b"0").
    BUSY = 5
    #: manager → worker: read the configuration file again (SIGHUP).
    RELOAD = 6
    #: worker → manager: listening and ready (request number: the worker's index); also
    #: the answer to RELOAD (payload b"ok" or the error).
    READY = 7


#: Frame kind number → Kind (a dict look-up; calling the IntEnum is Python-level work).
_KINDS: dict[int, Kind] = {k.value: k for k in Kind}

#: Every combination of the Notify bits, so decoding is a look-up.
_NOTIFY = {v: Notify(v) for v in range(16)}


def encode_store(envelope: Envelope, content: bytes) -> bytes:
    """The STORE payload: the envelope as a tuple of plain values, then the content.

    Plain tuples pickle and unpickle in C; pickling the frozen dataclasses themselves goes
    through dataclasses' Python ``__setstate__`` and cost more than the rest of the hand-off.
    """
    e = envelope
    # ``_value_``: the member's value without Enum's Python-level ``value`` property.
    rcpts = tuple([(r.address, r.notify._value_, r.orcpt) for r in e.recipients])
    fields = (
        e.sender,
        rcpts,
        e.vmta,
        e.job_id,
        e.env_id,
        e.ret,
        e.source_ip,
        e.source_helo,
        e.source_type,
        e.auth_user,
        e.arrival,
        e.smtputf8,
        e.body_8bit,
        e.tags,
    )
    return pickle.dumps((fields, content), protocol=5)


def decode_store(payload: bytes) -> tuple[Envelope, bytes]:
    """The envelope and content of a STORE payload (ValueError/pickle errors if malformed)."""
    fields, content = pickle.loads(payload)
    (sender, rcpts, vmta, job, envid, ret, ip, helo, stype, auth, arrival, utf8, b8, tags) = fields
    recipients = tuple(
        Recipient(address=a, notify=_NOTIFY[n], orcpt=o) for a, n, o in cast(Any, rcpts)
    )
    envelope = Envelope(
        sender=sender,
        recipients=recipients,
        vmta=vmta,
        job_id=job,
        env_id=envid,
        ret=ret,
        source_ip=ip,
        source_helo=helo,
        source_type=stype,
        auth_user=auth,
        arrival=arrival,
        smtputf8=utf8,
        body_8bit=b8,
        tags=tuple(tags),
    )
    return envelope, content


OnFrame = Callable[[Kind, int, bytes], None]
OnLost = Callable[[Exception | None], None]


class FrameProtocol(asyncio.Protocol):
    """One end of a manager ↔ worker link: parses frames in, batches frames out."""

    def __init__(self, on_frame: OnFrame, on_lost: OnLost) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.closed = False

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        size = HEADER.size
        pos = 0
        end = len(buf)
        while end - pos >= size:
            length, kind, req = HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME:
                self._fail(ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}"))
                return
            if end - pos - size < length:
                break
            start = pos + size
            payload = bytes(buf[start : start + length])
            pos = start + length
            frame_kind = _KINDS.get(kind)
            if frame_kind is None:
                self._fail(ValueError(f"unknown frame kind {kind}"))
                return
            self._on_frame(frame_kind, req, payload)
            if self.closed:
                return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self._on_lost(exc)

    # --- sending --------------------------------------------------------------------

    def send(self, kind: Kind, req: int, payload: bytes = b"") -> None:
        """Queue one frame; everything queued in this loop iteration leaves in one write."""
        if self.closed or self.transport is None:
            return
        self._out.append(HEADER.pack(len(payload), kind, req))
        self._out.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self.transport is None or self.closed:
            return
        self._out = []
        self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        log.error("intake worker link broken: %s", exc)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._on_lost(exc)
