"""SqliteSpool: the durable spool, SQLite in WAL mode with synchronous=FULL and group commit.

Layout of ``<spool PATH>``: ``spool.db`` (+ ``-wal``, ``-shm``) and ``spool.lock`` (an
exclusive ``flock`` so two daemons never share a spool). Tables:

* ``msg(id, nrcpt, crc, env)``: one small row per message; ``env`` is the compact JSON
  envelope (:mod:`sluice.spool._codec`), ``crc`` its CRC-32. Recovery scans only this table
  and ``rcpt``, never bodies.
* ``body(id, crc, data)``: the message bytes and their CRC-32, checked on every load.
* ``rcpt(msg_id, idx, state, attempts, next_at, detail)``: only recipients that were marked;
  an absent row means "queued, never tried".
* ``quarantine(id, env, reason)``: envelope records that failed their checks at recovery
  (test plan D2: kept for a human, never delivered, never a crash).
* ``meta``: a ceiling above every id given out (reserved a block at a time), so ids are
  never reused after a restart.

Writes go through one writer thread (:class:`~sluice.spool._groupcommit.GroupCommitter`):
every batch is one ``BEGIN IMMEDIATE … COMMIT`` of a statement per table
(:mod:`sluice.spool._sqlbatch`), and marks and removes wait up to ``defer`` to share a
store's commit; with ``synchronous=FULL`` the commit
returns after the WAL is fsync'd, and only then are the waiting futures resolved (D1). SQLite
fsyncs the directory when it creates the WAL, and :meth:`SqliteSpool.open` fsyncs the spool
directory once more after creating its files. Body loads go through a second thread with its
own read connection, batched the same way.

Public names: SqliteSpool, DEFAULT_LINGER, DEFAULT_DEFER, DEFAULT_MAX_BATCH.
Raises: SpoolFullError (SQLITE_FULL, ENOSPC, EDQUOT, or the ``max_bytes`` quota),
SpoolUnavailableError (any other store error, a spool locked by another process, an unknown
format), UnknownMessageError, CorruptMessageError.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator

from sluice.errors import SpoolUnavailableError
from sluice.message import MessageId, RcptState
from sluice.spool._codec import EnvelopeDecoder
from sluice.spool._front import CommitFront
from sluice.spool._groupcommit import GroupCommitter
from sluice.spool._sqlbatch import (
    BUSY_TIMEOUT_MS,
    SCHEMA,
    Reader,
    WriteOp,
    Writer,
    connect,
    is_store,
    map_store_error,
)
from sluice.spool.base import (
    FRESH,
    CorruptMessageError,
    RcptProgress,
    SpooledMessage,
)

__all__ = ["DEFAULT_DEFER", "DEFAULT_LINGER", "DEFAULT_MAX_BATCH", "SqliteSpool"]

log = logging.getLogger("sluice.spool")

#: How long the writer waits for more stores after the first one (DESIGN §2 suggests up to
#: ~2 ms). Measured here (docs/spool.md): 0 is best. Stores that arrive while a commit's
#: fsync runs form the next batch by themselves (20 concurrent storers → batches of 20), and
#: a linger only adds latency (2 ms cut 20-session throughput from 23,000 to 6,900 msgs/s).
DEFAULT_LINGER = 0.0
#: How long a mark or a remove may wait for a store to share its commit (every commit costs
#: one fsync, ~60 µs of kernel CPU here, whatever it carries). Stores never wait; marks and
#: removes are awaited by the delivery manager's flush, not by a client's reply. Measured
#: with the relay pattern at 1,700 msgs/s (docs/spool.md): 1.5 → 0.5 commits per message,
#: writer thread 158 → 94 µs of CPU per message; 1 ms kept ~0.6–0.75 commits per message.
DEFAULT_DEFER = 0.002
#: Most operations in one transaction (DESIGN §2 measured SQLite at batches of 1/10/100;
#: beyond a few hundred 2 KB messages the fsync is no longer the cost).
DEFAULT_MAX_BATCH = 512
#: Most body loads in one read batch.
READ_MAX_BATCH = 256
#: On-disk schema version (PRAGMA user_version).
SCHEMA_VERSION = 1
DB_NAME = "spool.db"
LOCK_NAME = "spool.lock"

_RCPT_STATE = {s.value: s for s in RcptState}


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SqliteSpool(CommitFront):
    """The durable spool under a directory; create with ``await SqliteSpool.open(path)``."""

    def __init__(
        self,
        path: str,
        *,
        lock_fd: int,
        writer: Writer,
        reader: Reader,
        next_id: int,
        linger: float,
        max_batch: int,
        max_bytes: int | None,
        defer: float = DEFAULT_DEFER,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.path = path
        self._db_path = os.path.join(path, DB_NAME)
        self._lock_fd: int | None = lock_fd
        self._max_bytes = max_bytes
        self._next_id = next_id
        self._writer = writer
        self._reader = reader
        self._wq: GroupCommitter[WriteOp] = GroupCommitter(
            "sluice-spool-writer",
            writer.run,
            loop=loop,
            linger=linger,
            max_batch=max_batch,
            on_exit=writer.close,
            defer=defer,
            urgent=is_store,
        )
        self._rq: GroupCommitter[MessageId] = GroupCommitter(
            "sluice-spool-reader",
            reader.run,
            loop=loop,
            linger=0.0,
            max_batch=READ_MAX_BATCH,
            on_exit=reader.close,
        )
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        linger: float = DEFAULT_LINGER,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_bytes: int | None = None,
        defer: float = DEFAULT_DEFER,
    ) -> SqliteSpool:
        """Open (creating if needed) the spool at ``path``; ``max_bytes`` caps the store size.

        Raises SpoolUnavailableError if the spool is locked by another process, has an
        unknown format, or cannot be opened; SpoolFullError if there is no room to create it.
        """
        lock_fd, writer, reader, next_id = await asyncio.to_thread(_open_files, path, max_bytes)
        return cls(
            path,
            lock_fd=lock_fd,
            writer=writer,
            reader=reader,
            next_id=next_id,
            linger=linger,
            max_batch=max_batch,
            max_bytes=max_bytes,
            defer=defer,
        )

    async def load_body(self, msg_id: MessageId) -> bytes:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        body: bytes = await self._rq.submit(msg_id)
        return body

    def recover(self) -> Iterator[SpooledMessage]:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        return recover_path(self._db_path)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Reader first: the writer's connection, closing last, checkpoints and removes the WAL
        # (a query_only connection closing last would leave it for the next start to replay).
        await self._rq.stop()
        await self._wq.stop()
        self._release_lock()

    async def abandon(self) -> None:
        """Stop as a crash would: drop pending work, no checkpoint; for crash tests only."""
        if self._closed:
            return
        self._closed = True
        self._writer.close_on_exit = False
        self._reader.close_on_exit = False
        await self._wq.stop(abandon=True)
        await self._rq.stop(abandon=True)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None


def _open_files(path: str, max_bytes: int | None) -> tuple[int, Writer, Reader, int]:
    """Blocking part of :meth:`SqliteSpool.open` (runs in a worker thread)."""
    try:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
            _fsync_dir(os.path.dirname(path))
        lock_fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise map_store_error(exc, f"open spool {path}") from exc
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolUnavailableError(f"spool {path} is in use by another process") from None
        db_path = os.path.join(path, DB_NAME)
        wconn = connect(db_path, max_bytes)
        try:
            version = wconn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                wconn.execute("BEGIN IMMEDIATE")
                for stmt in SCHEMA:
                    wconn.execute(stmt)
                wconn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                wconn.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                raise SpoolUnavailableError(f"{db_path}: unknown spool format {version}")
            # ``meta`` holds a ceiling: every id ever given out is below it (ids are reserved
            # a block at a time). Spools written before that held the last id + 1: the same.
            (reserved,) = wconn.execute("SELECT v FROM meta WHERE k='next_id'").fetchone()
            (max_id,) = wconn.execute("SELECT max(id) FROM msg").fetchone()
            next_id = max(reserved, (max_id or 0) + 1, 1)
            rconn = connect(db_path, None)
            rconn.execute("PRAGMA query_only=1")
        except BaseException:
            wconn.close()
            raise
        # The db, WAL and lock files now exist: make their names durable (D1).
        _fsync_dir(path)
    except BaseException as exc:
        os.close(lock_fd)
        if isinstance(exc, sqlite3.Error | OSError):
            raise map_store_error(exc, f"open spool {path}") from exc
        raise
    return lock_fd, Writer(db_path, wconn, max_bytes, reserved), Reader(rconn), next_id


def recover_path(db_path: str) -> Iterator[SpooledMessage]:
    """Scan a spool database (a read snapshot), quarantining bad envelope records at the end."""
    try:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise map_store_error(exc, "recover") from exc
    bad: list[tuple[int, bytes, str]] = []
    try:
        conn.execute("BEGIN")  # one snapshot for both scans
        msgs = conn.execute("SELECT id, nrcpt, crc, env FROM msg ORDER BY id")
        rcpts = conn.execute(
            "SELECT msg_id, idx, state, attempts, next_at, detail FROM rcpt ORDER BY msg_id, idx"
        )
        yield from _merge(msgs, rcpts, bad)
        conn.execute("COMMIT")
        if bad:
            _quarantine(conn, bad)
    except sqlite3.Error as exc:
        raise map_store_error(exc, "recover") from exc
    finally:
        conn.close()


def _merge(
    msgs: sqlite3.Cursor, rcpts: sqlite3.Cursor, bad: list[tuple[int, bytes, str]]
) -> Iterator[SpooledMessage]:
    decode = EnvelopeDecoder().decode
    crc32 = zlib.crc32
    fresh: dict[int, tuple[RcptProgress, ...]] = {}
    states = _RCPT_STATE
    pending = next(rcpts, None)
    for mid, nrcpt, crc, blob in msgs:
        prog = fresh.get(nrcpt)
        if prog is None:
            prog = fresh[nrcpt] = (FRESH,) * nrcpt
        while pending is not None and pending[0] < mid:  # rows of removed messages
            pending = next(rcpts, None)
        if pending is not None and pending[0] == mid:
            progress = list(prog)
            while pending is not None and pending[0] == mid:
                _, idx, state, attempts, next_at, detail = pending
                if idx < nrcpt:
                    progress[idx] = RcptProgress(
                        state=states[state], attempts=attempts, next_attempt=next_at, detail=detail
                    )
                pending = next(rcpts, None)
            prog = tuple(progress)
        if crc32(blob) != crc:
            bad.append((mid, blob, "envelope checksum mismatch"))
            continue
        try:
            env = decode(blob)
        except CorruptMessageError as exc:
            bad.append((mid, blob, str(exc)))
            continue
        if len(env.recipients) != nrcpt:
            bad.append((mid, blob, "recipient count mismatch"))
            continue
        yield SpooledMessage(msg_id=mid, envelope=env, rcpts=prog)


def _quarantine(conn: sqlite3.Connection, bad: list[tuple[int, bytes, str]]) -> None:
    """Move damaged records aside (Postfix's ``corrupt`` queue): kept, never delivered."""
    for mid, _, reason in bad:
        log.error("spool: message %d quarantined: %s", mid, reason)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT OR REPLACE INTO quarantine(id, env, reason) VALUES(?,?,?)",
        [(mid, blob, reason) for mid, blob, reason in bad],
    )
    ids = [(mid,) for mid, _, _ in bad]
    conn.executemany("DELETE FROM msg WHERE id=?", ids)
    conn.executemany("DELETE FROM rcpt WHERE msg_id=?", ids)
    conn.execute("COMMIT")
