"""The SQLite spool's thread side: connection set-up, the batch writer and the body reader.

A batch of stores, marks and removes becomes one transaction of a fixed handful of
statements, whatever its size: one multi-row ``INSERT`` per table, one ``INSERT … SELECT``
for the marks, one ``DELETE … WHERE id IN (…)`` per table (each in chunks of
:data:`CHUNK_ROWS` rows). Every statement is a call into SQLite that releases and takes
back the GIL, so a statement per row would cost a thread hand-off per row while the event
loop is busy; a statement per table costs the same for 1 or 100 messages.

Public names (for :mod:`sluice.spool.sqlite`): connect, map_store_error, Store, Mark,
Remove, WriteOp, is_store, Writer, Reader, and the constants below.
Raises: SpoolFullError, SpoolUnavailableError (map_store_error; results of Writer.run),
UnknownMessageError and CorruptMessageError (results of Reader.run).
"""

from __future__ import annotations

import errno
import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.errors import SpoolError, SpoolFullError, SpoolUnavailableError
from sluice.message import Envelope, MessageId
from sluice.spool._codec import encode_envelope
from sluice.spool.base import CorruptMessageError, RcptUpdate, UnknownMessageError

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CHUNK_ROWS",
    "ID_BLOCK",
    "JOURNAL_SIZE_LIMIT",
    "PAGE_SIZE",
    "SCHEMA",
    "Mark",
    "Reader",
    "Remove",
    "Store",
    "WriteOp",
    "Writer",
    "connect",
    "is_store",
    "map_store_error",
]

#: Wait for a lock held by another connection (a recovery scan, an operator tool) this long.
BUSY_TIMEOUT_MS = 10_000
#: Cap the WAL file kept after a checkpoint (bytes); SQLite's default keeps it at its peak.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
#: Page size of a new spool. With SQLite's default 4096 a 2 KB body fills a page alone (two
#: 2 KB cells do not fit): 1M messages took 4.3 GB. 16 KiB pages hold seven, with the same
#: store throughput (docs/spool.md).
PAGE_SIZE = 16384
#: Rows per multi-row statement: 64 × 6 parameters stays under SQLite's historical limit of
#: 999 bound parameters (SQLITE_MAX_VARIABLE_NUMBER before 3.32), and the statement cache
#: keeps one prepared statement per row count.
CHUNK_ROWS = 64
#: Prepared statements kept per connection: one per row count (1…CHUNK_ROWS) for each of the
#: six batch statements, plus the few fixed ones.
STATEMENT_CACHE = 8 * CHUNK_ROWS
#: Message ids are reserved in ``meta`` this many at a time, so that a store batch writes the
#: ``meta`` page (one more WAL frame and page write) once per block, not once per commit. A
#: restart skips the rest of the block: ids stay unique and increasing, not dense.
ID_BLOCK = 4096

_SQLITE_FULL = 13
_SQLITE_IOERR = 10

SCHEMA = (
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


def _by_rows(template: str, row: str) -> tuple[str, ...]:
    """``template`` with 1…CHUNK_ROWS copies of ``row``; index 0 is unused."""
    return ("", *(template.format(",".join([row] * k)) for k in range(1, CHUNK_ROWS + 1)))


_INSERT_MSG = _by_rows("INSERT INTO msg(id, nrcpt, crc, env) VALUES{}", "(?,?,?,?)")
_INSERT_BODY = _by_rows("INSERT INTO body(id, crc, data) VALUES{}", "(?,?,?)")
#: Marks of removed messages, or of an index past the last recipient, find no ``msg`` row
#: and are dropped by the join.
_UPSERT_RCPT = _by_rows(
    "INSERT OR REPLACE INTO rcpt(msg_id, idx, state, attempts, next_at, detail)"
    " SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6"
    " FROM (VALUES{}) AS v, msg WHERE msg.id = v.column1 AND msg.nrcpt > v.column2",
    "(?,?,?,?,?,?)",
)
_DELETE_RCPT = _by_rows("DELETE FROM rcpt WHERE msg_id IN ({})", "?")
_DELETE_BODY = _by_rows("DELETE FROM body WHERE id IN ({})", "?")
_DELETE_MSG = _by_rows("DELETE FROM msg WHERE id IN ({})", "?")
_RESERVE_IDS = "UPDATE meta SET v=max(v, ?) WHERE k='next_id'"

#: A recipient update as bound to ``_UPSERT_RCPT``.
_MarkRow = tuple[int, int, int, int, float | None, str]


# The write operations spell out their __init__: compiled by mypyc, a hand-written one is a
# native constructor (~10x faster); tests/test_dataclass_inits.py keeps each in step.


@dataclass(frozen=True, slots=True, kw_only=True)
class Store:
    msg_id: MessageId
    envelope: Envelope
    body: bytes

    def __init__(self, *, msg_id: MessageId, envelope: Envelope, body: bytes) -> None:
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "envelope", envelope)
        object.__setattr__(self, "body", body)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    updates: Sequence[RcptUpdate]

    def __init__(self, *, updates: Sequence[RcptUpdate]) -> None:
        object.__setattr__(self, "updates", updates)


@dataclass(frozen=True, slots=True, kw_only=True)
class Remove:
    msg_id: MessageId

    def __init__(self, *, msg_id: MessageId) -> None:
        object.__setattr__(self, "msg_id", msg_id)


WriteOp = Store | Mark | Remove


def is_store(op: WriteOp) -> bool:
    """Stores are urgent (a client waits for the reply); marks and removes may be deferred."""
    return type(op) is Store


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


def connect(db_path: str, max_bytes: int | None) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` (every COMMIT fsyncs the WAL)."""
    conn = sqlite3.connect(
        db_path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENT_CACHE
    )
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


def _execute_rows(
    conn: sqlite3.Connection, sql: tuple[str, ...], params: list[object], width: int
) -> None:
    """Run the multi-row statement ``sql[k]`` over ``params`` (``width`` per row) in chunks."""
    rows = len(params) // width
    if rows <= CHUNK_ROWS:
        conn.execute(sql[rows], params)
        return
    for start in range(0, rows, CHUNK_ROWS):
        k = min(CHUNK_ROWS, rows - start)
        conn.execute(sql[k], params[start * width : (start + k) * width])


class Writer:
    """The writer thread's side: one connection, one transaction per batch."""

    def __init__(
        self, db_path: str, conn: sqlite3.Connection, max_bytes: int | None, reserved: int
    ) -> None:
        self._db_path = db_path
        self._conn: sqlite3.Connection | None = conn
        self._max_bytes = max_bytes
        #: Every id below this is reserved in ``meta`` (durably, once a commit held it).
        self._reserved = reserved
        self.close_on_exit = True

    def run(self, ops: Sequence[WriteOp]) -> list[object]:
        results: list[object] = [None] * len(ops)
        msg_params: list[object] = []
        body_params: list[object] = []
        marks: dict[tuple[int, int], _MarkRow] = {}
        removes: list[object] = []
        store_at: list[int] = []
        other_at: list[int] = []
        crc32 = zlib.crc32
        top = 0
        for i, op in enumerate(ops):
            match op:
                case Store(msg_id=mid, envelope=env, body=body):
                    try:
                        blob = encode_envelope(env)
                    except (UnicodeError, ValueError, TypeError) as exc:
                        results[i] = SpoolUnavailableError(f"cannot encode envelope: {exc}")
                        continue
                    msg_params += (mid, len(env.recipients), crc32(blob), blob)
                    body_params += (mid, crc32(body), body)
                    results[i] = mid
                    store_at.append(i)
                    top = max(top, mid)
                case Mark(updates=ups):
                    for u in ups:  # the last update of a recipient in the batch wins
                        marks[u.msg_id, u.rcpt_index] = (
                            u.msg_id,
                            u.rcpt_index,
                            u.state._value_,
                            u.attempts,
                            u.next_attempt,
                            u.detail,
                        )
                    other_at.append(i)
                case Remove(msg_id=mid):
                    removes.append(mid)
                    other_at.append(i)
        mark_params: list[object] = [x for row in marks.values() for x in row]
        try:
            self._commit(msg_params, body_params, top, mark_params, removes)
        except Exception as exc:
            err = map_store_error(exc, "commit")
            failed = store_at + other_at
            if isinstance(err, SpoolFullError) and store_at and other_at:
                # Full: let marks and removes (which free space) through without the stores.
                try:
                    self._commit([], [], 0, mark_params, removes)
                    failed = store_at
                except Exception as exc2:
                    err = map_store_error(exc2, "commit")
            for i in failed:
                results[i] = err
        return results

    def _commit(
        self,
        msg_params: list[object],
        body_params: list[object],
        top: int,
        mark_params: list[object],
        removes: list[object],
    ) -> None:
        if not (msg_params or mark_params or removes):
            return
        conn = self._conn
        if conn is None:  # the last batch hit an I/O error: start from a fresh connection
            conn = self._conn = connect(self._db_path, self._max_bytes)
        reserve = top + ID_BLOCK if top >= self._reserved else 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            if msg_params:
                _execute_rows(conn, _INSERT_MSG, msg_params, 4)
                _execute_rows(conn, _INSERT_BODY, body_params, 3)
                if reserve:
                    conn.execute(_RESERVE_IDS, (reserve,))
            if mark_params:
                _execute_rows(conn, _UPSERT_RCPT, mark_params, 6)
            if removes:
                _execute_rows(conn, _DELETE_RCPT, removes, 1)
                _execute_rows(conn, _DELETE_BODY, removes, 1)
                _execute_rows(conn, _DELETE_MSG, removes, 1)
            conn.execute("COMMIT")
        except BaseException as exc:
            self._after_failure(conn, exc)
            raise
        if reserve:
            self._reserved = reserve

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


class Reader:
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
