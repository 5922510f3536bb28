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
* ``meta``: the id high-water mark, so ids are never reused after a restart.

Writes go through one writer thread (:class:`~sluice.spool._groupcommit.GroupCommitter`):
every batch is one ``BEGIN IMMEDIATE … COMMIT``; with ``synchronous=FULL`` the commit
returns after the WAL is fsync'd, and only then are the waiting futures resolved (D1). SQLite
fsyncs the directory when it creates the WAL, and :meth:`SqliteSpool.open` fsyncs the spool
directory once more after creating its files. Body loads go through a second thread with its
own read connection, batched the same way.

Public names: SqliteSpool, DEFAULT_LINGER, DEFAULT_MAX_BATCH.
Raises: SpoolFullError (SQLITE_FULL, ENOSPC, EDQUOT, or the ``max_bytes`` quota),
SpoolUnavailableError (any other store error, a spool locked by another process, an unknown
format), UnknownMessageError, CorruptMessageError.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sluice.errors import SpoolError, SpoolFullError, SpoolUnavailableError
from sluice.message import Envelope, MessageId, RcptState
from sluice.spool._codec import EnvelopeDecoder, encode_envelope
from sluice.spool._groupcommit import BatchStats, GroupCommitter
from sluice.spool.base import (
    FRESH,
    CorruptMessageError,
    RcptProgress,
    RcptUpdate,
    SpooledMessage,
    UnknownMessageError,
)

__all__ = ["DEFAULT_LINGER", "DEFAULT_MAX_BATCH", "SqliteSpool"]

log = logging.getLogger("sluice.spool")

#: How long the writer waits for more stores after the first one (DESIGN §2 suggests up to
#: ~2 ms). Measured here (docs/spool.md): 0 is best. Stores that arrive while a commit's
#: fsync runs form the next batch by themselves (20 concurrent storers → batches of 20), and
#: a linger only adds latency (2 ms cut 20-session throughput from 23,000 to 6,900 msgs/s).
DEFAULT_LINGER = 0.0
#: Most operations in one transaction (DESIGN §2 measured SQLite at batches of 1/10/100;
#: beyond a few hundred 2 KB messages the fsync is no longer the cost).
DEFAULT_MAX_BATCH = 512
#: Most body loads in one read batch.
READ_MAX_BATCH = 256
#: On-disk schema version (PRAGMA user_version).
SCHEMA_VERSION = 1
#: Wait for a lock held by another connection (a recovery scan, an operator tool) this long.
BUSY_TIMEOUT_MS = 10_000
#: Cap the WAL file kept after a checkpoint (bytes); SQLite's default keeps it at its peak.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
#: Page size of a new spool. With SQLite's default 4096 a 2 KB body fills a page alone (two
#: 2 KB cells do not fit): 1M messages took 4.3 GB. 16 KiB pages hold seven, with the same
#: store throughput (docs/spool.md).
PAGE_SIZE = 16384
DB_NAME = "spool.db"
LOCK_NAME = "spool.lock"

_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_SCHEMA = (
    "CREATE TABLE msg(id INTEGER PRIMARY KEY, nrcpt INTEGER NOT NULL, crc INTEGER NOT NULL,"
    " env BLOB NOT NULL)",
    "CREATE TABLE body(id INTEGER PRIMARY KEY, crc INTEGER NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE rcpt(msg_id INTEGER NOT NULL, idx INTEGER NOT NULL, state INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL, next_at REAL, detail TEXT NOT NULL,"
    " PRIMARY KEY(msg_id, idx)) WITHOUT ROWID",
    "CREATE TABLE quarantine(id INTEGER PRIMARY KEY, env BLOB, reason TEXT NOT NULL)",
    "CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "INSERT INTO meta VALUES('next_id', 1)",
)

_INSERT_MSG = "INSERT INTO msg(id, nrcpt, crc, env) VALUES(?,?,?,?)"
_INSERT_BODY = "INSERT INTO body(id, crc, data) VALUES(?,?,?)"
_UPSERT_RCPT = (
    "INSERT OR REPLACE INTO rcpt(msg_id, idx, state, attempts, next_at, detail)"
    " SELECT ?1,?2,?3,?4,?5,?6 WHERE EXISTS(SELECT 1 FROM msg WHERE id=?1 AND nrcpt>?2)"
)
_BUMP_NEXT_ID = "UPDATE meta SET v=max(v, ?) WHERE k='next_id'"

_RCPT_STATE = {s.value: s for s in RcptState}


@dataclass(frozen=True, slots=True)
class _Store:
    msg_id: MessageId
    envelope: Envelope
    body: bytes


@dataclass(frozen=True, slots=True)
class _Mark:
    updates: Sequence[RcptUpdate]


@dataclass(frozen=True, slots=True)
class _Remove:
    msg_id: MessageId


_WriteOp = _Store | _Mark | _Remove


def map_store_error(exc: BaseException, what: str) -> SpoolError:
    """The SpoolError for a foreign exception from the store (DESIGN: map at the edge)."""
    if isinstance(exc, SpoolError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == _SQLITE_FULL:
            return SpoolFullError(f"spool full while trying to {what}: {exc}")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SpoolFullError(f"spool full while trying to {what}: {exc}")
    return SpoolUnavailableError(f"spool failed to {what}: {exc}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(db_path: str, max_bytes: int | None) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new database
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        conn.close()
        raise SpoolUnavailableError(f"{db_path}: cannot use WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA secure_delete=FAST")
    conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    if max_bytes is not None:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={max(1, max_bytes // page)}")
    return conn


class _Writer:
    """The writer thread's side: one connection, one transaction per batch."""

    def __init__(self, db_path: str, conn: sqlite3.Connection, max_bytes: int | None) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = conn
        self._max_bytes = max_bytes
        self.close_on_exit = True

    def run(self, ops: Sequence[_WriteOp]) -> list[object]:
        results: list[object] = [None] * len(ops)
        msg_rows: list[tuple[int, int, int, bytes]] = []
        body_rows: list[tuple[int, int, bytes]] = []
        mark_rows: list[tuple[int, int, int, int, float | None, str]] = []
        rm_rows: list[tuple[int]] = []
        store_at: list[int] = []
        other_at: list[int] = []
        for i, op in enumerate(ops):
            match op:
                case _Store(msg_id=mid, envelope=env, body=body):
                    try:
                        blob = encode_envelope(env)
                    except (UnicodeError, ValueError, TypeError) as exc:
                        results[i] = SpoolUnavailableError(f"cannot encode envelope: {exc}")
                        continue
                    msg_rows.append((mid, len(env.recipients), zlib.crc32(blob), blob))
                    body_rows.append((mid, zlib.crc32(body), body))
                    results[i] = mid
                    store_at.append(i)
                case _Mark(updates=ups):
                    mark_rows.extend(
                        (
                            u.msg_id,
                            u.rcpt_index,
                            u.state.value,
                            u.attempts,
                            u.next_attempt,
                            u.detail,
                        )
                        for u in ups
                    )
                    other_at.append(i)
                case _Remove(msg_id=mid):
                    rm_rows.append((mid,))
                    other_at.append(i)
        try:
            self._commit(msg_rows, body_rows, mark_rows, rm_rows)
        except Exception as exc:
            err = map_store_error(exc, "commit")
            failed = store_at + other_at
            if isinstance(err, SpoolFullError) and msg_rows and other_at:
                # Full: let marks and removes (which free space) through without the stores.
                try:
                    self._commit([], [], mark_rows, rm_rows)
                    failed = store_at
                except Exception as exc2:
                    err = map_store_error(exc2, "commit")
            for i in failed:
                results[i] = err
        return results

    def _commit(
        self,
        msg_rows: list[tuple[int, int, int, bytes]],
        body_rows: list[tuple[int, int, bytes]],
        mark_rows: list[tuple[int, int, int, int, float | None, str]],
        rm_rows: list[tuple[int]],
    ) -> None:
        if not (msg_rows or mark_rows or rm_rows):
            return
        conn = self._conn
        if conn is None:  # the last batch hit an I/O error: start from a fresh connection
            conn = self._conn = _connect(self._db_path, self._max_bytes)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if msg_rows:
                conn.executemany(_INSERT_MSG, msg_rows)
                conn.executemany(_INSERT_BODY, body_rows)
                conn.execute(_BUMP_NEXT_ID, (msg_rows[-1][0] + 1,))
            if mark_rows:
                conn.executemany(_UPSERT_RCPT, mark_rows)
            if rm_rows:
                conn.executemany("DELETE FROM rcpt WHERE msg_id=?", rm_rows)
                conn.executemany("DELETE FROM body WHERE id=?", rm_rows)
                conn.executemany("DELETE FROM msg WHERE id=?", rm_rows)
            conn.execute("COMMIT")
        except BaseException as exc:
            self._after_failure(conn, exc)
            raise

    def _after_failure(self, conn: sqlite3.Connection, exc: BaseException) -> None:
        code = getattr(exc, "sqlite_errorcode", None)
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            code = _SQLITE_IOERR
        if code is None or code & 0xFF != _SQLITE_FULL:
            # After an I/O error the page cache may not match the disk (fsyncgate): reopen.
            self._conn = None
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        if self._conn is not None and self.close_on_exit:
            self._conn.close()
        self._conn = None


class _Reader:
    """The reader thread's side: batched body loads with checksum verification."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.close_on_exit = True

    def run(self, ids: Sequence[MessageId]) -> list[object]:
        try:
            marks = ",".join("?" * len(ids))
            rows = self._conn.execute(
                f"SELECT id, crc, data FROM body WHERE id IN ({marks})", tuple(ids)
            ).fetchall()
        except sqlite3.Error as exc:
            return [map_store_error(exc, "load a body")] * len(ids)
        found = {mid: (crc, data) for mid, crc, data in rows}
        out: list[object] = []
        for mid in ids:
            got = found.get(mid)
            if got is None:
                out.append(UnknownMessageError(f"message {mid} is not in the spool"))
            elif zlib.crc32(got[1]) != got[0]:
                out.append(CorruptMessageError(f"message {mid}: body checksum mismatch"))
            else:
                out.append(got[1])
        return out

    def close(self) -> None:
        if self.close_on_exit:
            self._conn.close()


class SqliteSpool:
    """The durable spool under a directory; create with ``await SqliteSpool.open(path)``."""

    def __init__(
        self,
        path: str,
        *,
        lock_fd: int,
        writer: _Writer,
        reader: _Reader,
        next_id: int,
        linger: float,
        max_batch: int,
        max_bytes: int | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.path = path
        self._db_path = os.path.join(path, DB_NAME)
        self._lock_fd: int | None = lock_fd
        self._max_bytes = max_bytes
        self._next_id = next_id
        self._writer = writer
        self._reader = reader
        self._wq: GroupCommitter[_WriteOp] = GroupCommitter(
            "sluice-spool-writer",
            writer.run,
            loop=loop,
            linger=linger,
            max_batch=max_batch,
            on_exit=writer.close,
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
        )

    @property
    def write_stats(self) -> BatchStats:
        """Batches committed and operations carried (for benchmarks and tests)."""
        return self._wq.stats

    async def store(self, envelope: Envelope, body: bytes) -> MessageId:
        result: MessageId = await self.store_nowait(envelope, body)
        return result

    def store_nowait(self, envelope: Envelope, body: bytes) -> asyncio.Future[MessageId]:
        """:meth:`store` without a coroutine: the future resolves once the message is
        durable (for callers that batch many stores, e.g. intake workers' hand-offs)."""
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        msg_id = self._next_id
        self._next_id = msg_id + 1
        future: asyncio.Future[MessageId] = self._wq.submit(_Store(msg_id, envelope, bytes(body)))
        return future

    async def mark(self, updates: Sequence[RcptUpdate]) -> None:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        if updates:
            await self._wq.submit(_Mark(tuple(updates)))

    async def load_body(self, msg_id: MessageId) -> bytes:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        body: bytes = await self._rq.submit(msg_id)
        return body

    async def remove(self, msg_id: MessageId) -> None:
        if self._closed:
            raise SpoolUnavailableError("the spool is closed")
        await self._wq.submit(_Remove(msg_id))

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


def _open_files(path: str, max_bytes: int | None) -> tuple[int, _Writer, _Reader, int]:
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
        wconn = _connect(db_path, max_bytes)
        try:
            version = wconn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                wconn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA:
                    wconn.execute(stmt)
                wconn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                wconn.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                raise SpoolUnavailableError(f"{db_path}: unknown spool format {version}")
            (stored_next,) = wconn.execute("SELECT v FROM meta WHERE k='next_id'").fetchone()
            (max_id,) = wconn.execute("SELECT max(id) FROM msg").fetchone()
            next_id = max(stored_next, (max_id or 0) + 1, 1)
            rconn = _connect(db_path, None)
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
    return lock_fd, _Writer(db_path, wconn, max_bytes), _Reader(rconn), next_id


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
