"""Opening a segment spool: lock, replay sealed segments from their sidecars, scan the last.

Sealed segments are replayed from their sidecars (envelope-side records only: recovery
reads no bodies). A sealed segment without a valid sidecar is scanned whole, every record
checked, and its sidecar rewritten. The last segment is always scanned: the log ends after
its last valid record; anything after that (a torn tail: a crash mid-write, never
acknowledged) is logged and zeroed, so the writer continues from there.
Damaged records anywhere else are quarantined and skipped (D2: never delivered, never a
crash). Then segments holding nothing live are deleted.

Public names: Opened, open_dir, load_records.
Raises: SpoolUnavailableError (locked by another process, unreadable, another format
version, a SQLite spool's directory), SpoolFullError.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
from dataclasses import dataclass

from sluice.errors import SpoolUnavailableError
from sluice.spool._segment_files import (
    LOCK_NAME,
    PREPARED_NAME,
    Preparer,
    fsync_dir,
    map_os_error,
    quarantine,
    seg_name,
    seg_number,
    sidecar_name,
)
from sluice.spool._segment_index import NRCPT_BITS as _NRCPT_BITS
from sluice.spool._segment_index import OFF_BITS as _OFF_BITS
from sluice.spool._segment_index import SIZE_BITS as _SIZE_BITS
from sluice.spool._segment_index import Index
from sluice.spool._segment_rec import (
    HDR_SIZE,
    HEAD_MAGIC,
    Bad,
    Kind,
    Rec,
    UnknownFormatError,
    decode_marks,
    decode_moved,
    decode_removes,
    encode_record,
    encode_sidecar,
    read_sidecar,
    rec_size,
    scan_stream,
)

__all__ = ["SQLITE_NAME", "Opened", "load_records", "open_dir"]

#: A SqliteSpool's database: a directory holding one is not a segment spool.
SQLITE_NAME = "spool.db"

log = logging.getLogger("sluice.spool")

#: Smallest first segment a nearly full disk may get (Sluice's choice: the daemon must
#: start, and deliver what it holds, even when a whole segment no longer fits).
MIN_FIRST_SEGMENT = 64 * 1024


@dataclass(slots=True, kw_only=True)
class Opened:
    """What :func:`open_dir` hands to the spool."""

    path: str
    lock_fd: int
    index: Index
    active: int
    cap: int
    pos: int
    entries: list[Rec]
    fds: dict[int, int]
    sizes: dict[int, int]
    next_id: int


def open_dir(path: str, segment_size: int) -> Opened:
    """Lock, replay and repair the spool at ``path`` (blocking; runs in a worker thread)."""
    try:
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
            fsync_dir(os.path.dirname(path))
        lock_fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise map_os_error(exc, f"open spool {path}") from exc
    fds: dict[int, int] = {}
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolUnavailableError(f"spool {path} is in use by another process") from None
        try:
            return _replay(path, lock_fd, segment_size, fds)
        except UnknownFormatError as exc:
            raise SpoolUnavailableError(f"{path}: unknown spool format: {exc}") from None
    except BaseException as exc:
        for fd in fds.values():
            os.close(fd)
        os.close(lock_fd)
        if isinstance(exc, OSError):
            raise map_os_error(exc, f"open spool {path}") from exc
        raise


def _replay(path: str, lock_fd: int, segment_size: int, fds: dict[int, int]) -> Opened:
    names = os.listdir(path)
    if SQLITE_NAME in names:
        raise SpoolUnavailableError(
            f"{path} holds a SQLite spool ({SQLITE_NAME}): open it with kind sqlite, or drain it"
        )
    segs = sorted(n for n in (seg_number(x) for x in names) if n is not None)
    if PREPARED_NAME in names:
        os.unlink(os.path.join(path, PREPARED_NAME))
    for name in names:  # sidecars whose segment is gone
        if name.endswith(".idx") and seg_number(name[:-4] + ".log") not in segs:
            os.unlink(os.path.join(path, name))
    index = Index()
    sizes: dict[int, int] = {}
    ceiling = 1
    if not segs:
        segs = [1]
        Preparer(path).take(1, segment_size, minimum=MIN_FIRST_SEGMENT)
    for seg in segs:
        fds[seg] = os.open(os.path.join(path, seg_name(seg)), os.O_RDONLY)
        sizes[seg] = os.fstat(fds[seg]).st_size
        index.add_segment(seg)
    for seg in segs[:-1]:
        recs = load_records(path, seg, fds[seg])
        ceiling = max(ceiling, _apply(path, index, seg, recs))
    last = segs[-1]
    try:
        os.unlink(os.path.join(path, sidecar_name(last)))  # the last segment is appended to
    except FileNotFoundError:
        pass
    entries, pos = _scan_last(path, last, fds[last], sizes[last])
    ceiling = max(ceiling, _apply(path, index, last, entries))
    next_id = max(ceiling, index.max_id + 1)
    if pos == 0:
        # Persist the id ceiling before older segments (which hold it) may be deleted.
        pos = _write_head(path, last, next_id)
        entries = [(0, Kind.HEAD, next_id, 0, 0, 0, HEAD_MAGIC)]
    for seg in index.deletable(last):
        os.close(fds.pop(seg))
        os.unlink(os.path.join(path, seg_name(seg)))
        try:
            os.unlink(os.path.join(path, sidecar_name(seg)))
        except FileNotFoundError:
            pass
        fsync_dir(path)
        index.drop_segment(seg)
        del sizes[seg]
    return Opened(
        path=path,
        lock_fd=lock_fd,
        index=index,
        active=last,
        cap=sizes[last],
        pos=pos,
        entries=entries,
        fds=fds,
        sizes=sizes,
        next_id=next_id,
    )


def _write_head(path: str, seg: int, ceiling: int) -> int:
    """Write (durably) the HEAD record of an empty last segment; the offset after it."""
    hdr = encode_record(Kind.HEAD, ceiling, 0, HEAD_MAGIC)
    fd = os.open(os.path.join(path, seg_name(seg)), os.O_RDWR)
    try:
        os.pwrite(fd, hdr + HEAD_MAGIC, 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return len(hdr) + len(HEAD_MAGIC)


def load_records(path: str, seg: int, fd: int) -> list[Rec]:
    """A sealed segment's records: from its sidecar, or by a checked scan (rewriting it)."""
    side = os.path.join(path, sidecar_name(seg))
    try:
        with open(side, "rb") as f:
            recs = read_sidecar(f.read())
        if recs is not None:
            return recs
        log.warning("spool: sidecar of segment %d is damaged; scanning the segment", seg)
    except FileNotFoundError:
        pass
    size = os.fstat(fd).st_size
    if size == 0:
        return []
    recs = []
    for item in scan_stream(lambda n, off: os.pread(fd, n, off), size):
        if isinstance(item, Bad):
            data = os.pread(fd, item.end - item.start, item.start)
            quarantine(path, seg, item.start, data, item.reason)
        else:
            recs.append((*item[:6], bytes(item[6])))
    data = encode_sidecar(recs)
    try:
        with open(side, "wb") as f:
            f.write(data)
    except OSError as exc:  # only a shortcut for the next start: a full disk must not stop this one
        log.warning("spool: cannot rewrite the sidecar of segment %d: %s", seg, exc)
        with contextlib.suppress(OSError):
            os.unlink(side)
    return recs


def _scan_last(path: str, seg: int, fd: int, size: int) -> tuple[list[Rec], int]:
    """The last segment's valid records (metas copied) and where its log ends; a torn tail
    is discarded (never acknowledged) and cleared."""
    recs: list[Rec] = []
    if size == 0:
        return recs, 0
    bads: list[Bad] = []
    # From the start, record by record: a record may end in zero bytes (a REMOVE's ids, a
    # body), so where the data ends is only known by scanning.
    for item in scan_stream(lambda n, off: os.pread(fd, n, off), size):
        if isinstance(item, Bad):
            bads.append(item)
        else:
            recs.append((*item[:6], bytes(item[6])))
    end = recs[-1][0] + rec_size(recs[-1]) if recs else 0
    saved = [(b, os.pread(fd, b.end - b.start, b.start)) for b in bads]
    tail_end = end
    for bad, data in saved:
        if bad.start >= end:
            # A write a crash cut short: its fdatasync never returned, so nothing in it was
            # acknowledged (SQLite drops a torn WAL frame the same way). Not damage: no
            # quarantine copy, a warning only.
            log.warning(
                "spool: segment %d: discarding %d bytes of a write cut short by a crash "
                "(never acknowledged)",
                seg,
                len(data),
            )
            tail_end = max(tail_end, bad.end)
        else:
            quarantine(path, seg, bad.start, data, bad.reason)
    if tail_end > end:
        wfd = os.open(os.path.join(path, seg_name(seg)), os.O_RDWR)
        try:
            os.pwrite(wfd, bytes(tail_end - end), end)
            os.fdatasync(wfd)
        finally:
            os.close(wfd)
    return recs, end


def _apply(path: str, index: Index, seg: int, recs: list[Rec]) -> int:
    """Replay one segment's records into ``index``; the highest id ceiling seen (HEAD)."""
    ceiling = 1
    store = index.store
    msgs = index.msgs
    stored = nbytes = top = 0
    base = seg << _OFF_BITS
    for off, kind, key, count, blen, _, meta in recs:
        if kind == Kind.STORE and key not in msgs:  # the hot case, inlined (1M at start)
            size = HDR_SIZE + len(meta) + blen
            msgs[key] = (((base | off) << _SIZE_BITS | size) << _NRCPT_BITS) | count
            stored += 1
            nbytes += size
            top = max(top, key)
            continue
        try:
            match kind:
                case Kind.STORE:  # an id seen before: only a bug or damage does this
                    store(seg, off, HDR_SIZE + len(meta) + blen, key, count)
                case Kind.MOVED:
                    _, items = decode_moved(meta, count)
                    store(seg, off, HDR_SIZE + len(meta) + blen, key, count, items=items)
                case Kind.MARK:
                    index.mark(seg, decode_marks(meta, count))
                case Kind.REMOVE:
                    index.remove(seg, decode_removes(meta, count))
                case Kind.HEAD:
                    if bytes(meta) == HEAD_MAGIC:
                        ceiling = max(ceiling, key)
        except (ValueError, struct.error) as exc:
            quarantine(path, seg, off, bytes(meta), f"undecodable record: {exc}")
    index.live[seg] += stored
    index.live_bytes += nbytes
    index.max_id = max(index.max_id, top)
    return ceiling
