"""The segment spool's writer thread: one write and one fdatasync per batch, then the index.

A batch of stores, marks and removes becomes: a STORE record per message, one MARK record
holding every mark and one REMOVE record holding every removal, written with one
``pwrite`` into the preallocated active segment and made durable with one ``fdatasync``.
Only then is the batch applied to the :class:`~sluice.spool._segment_index.Index` and the
futures resolved (D1, D4). A batch that does not fit seals the active segment (writing its
sidecar) and moves to the next, prepared in the background.

After a batch: segments that hold nothing live (and outlive nothing) are deleted, each
followed by a directory fsync; when the files hold more than ``COMPACT_RATIO`` times the
live bytes, a bounded step of the oldest segment's live messages is copied forward as
MOVED records (envelope, progress and body in one record), in a write of its own.

Public names: SegWriter, COMPACT_RATIO, COMPACT_STEP_BYTES.
Raises: (as results of ``run``) SpoolFullError, SpoolUnavailableError.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Sequence

from sluice.errors import SpoolError, SpoolFullError, SpoolUnavailableError
from sluice.spool._codec import encode_envelope
from sluice.spool._segment_files import Preparer, fsync_dir, map_os_error, seg_name, sidecar_name
from sluice.spool._segment_index import MAX_RCPTS, MAX_RECORD, Index, unpack
from sluice.spool._segment_rec import (
    HDR_SIZE,
    HEAD,
    HEAD_MAGIC,
    MARK,
    MOVED,
    REMOVE,
    STORE,
    Bad,
    MarkItem,
    Rec,
    decode_moved,
    encode_moved,
    encode_record,
    encode_sidecar,
    mark_items,
    scan_segment,
)
from sluice.spool._sqlbatch import Mark, Remove, Store, WriteOp

__all__ = ["COMPACT_RATIO", "COMPACT_STEP_BYTES", "SegWriter"]

log = logging.getLogger("sluice.spool")

#: Compact when the segment files hold more than this many times the live records' bytes
#: (plus two segments of slack): the write amplification of cleaning stays below 2.
COMPACT_RATIO = 2.0
#: Most bytes copied forward by one compaction step (one extra fdatasync each), so a step
#: delays the next batch by a few milliseconds at most.
COMPACT_STEP_BYTES = 4 * 1024 * 1024
#: Batches to wait before trying again after a compaction step failed or found nothing.
COMPACT_IDLE_BATCHES = 1000
#: Stores leave this much of a segment to marks and removes, so that deliveries can still
#: record progress and free space when no new segment can be made (disk or quota full).
RESERVE_BYTES = 64 * 1024
_HEAD_SIZE = HDR_SIZE + len(HEAD_MAGIC)
_MAX_U32 = 0xFFFFFFFF

#: A record written to the active segment, as its sidecar will list it.
_Entry = Rec


class SegWriter:
    """The writer thread's side: owns the active segment and applies batches to the index."""

    def __init__(
        self,
        dirpath: str,
        index: Index,
        *,
        active: int,
        cap: int,
        pos: int,
        entries: list[_Entry],
        fds: dict[int, int],
        sizes: dict[int, int],
        segment_size: int,
        max_bytes: int | None,
        on_delete: Callable[[int], None],
        sync_removes: bool = True,
    ) -> None:
        self._dir = dirpath
        self.index = index
        self.active = active
        self._cap = cap
        self._pos = pos
        self.entries = entries
        #: Read descriptors per segment, shared with the event loop (which closes them).
        self.fds = fds
        self._sizes = sizes
        self._segment_size = segment_size
        self._reserve = min(RESERVE_BYTES, segment_size // 8)
        self._sync_removes = sync_removes
        #: Written but not yet fdatasync'd (a batch of removes only, with sync_removes off).
        self._dirty = False
        self._max_bytes = max_bytes
        self._on_delete = on_delete
        self._fd: int | None = os.open(os.path.join(dirpath, seg_name(active)), os.O_RDWR)
        self._prep = Preparer(dirpath)
        self._compact_seg = 0
        self._compact_todo: list[tuple[int, int]] = []
        self._compact_pause = 0
        self.close_on_exit = True

    @property
    def disk_bytes(self) -> int:
        return sum(self._sizes.values())

    # -- the batch ------------------------------------------------------------------------

    def run(self, ops: Sequence[WriteOp]) -> list[object]:
        results: list[object] = [None] * len(ops)
        index = self.index
        msgs = index.msgs
        stores: list[tuple[int, int, int, bytes, bytes, bytes, int]] = []
        marks: list[MarkItem] = []
        removes: list[int] = []
        gone: set[int] = set()
        others: list[int] = []
        for i, op in enumerate(ops):
            match op:
                case Store(msg_id=mid, envelope=env, body=body):
                    try:
                        blob = encode_envelope(env)
                    except (UnicodeError, ValueError, TypeError) as exc:
                        results[i] = SpoolUnavailableError(f"cannot encode envelope: {exc}")
                        continue
                    nrcpt = len(env.recipients)
                    if nrcpt > MAX_RCPTS or HDR_SIZE + len(blob) + len(body) > MAX_RECORD:
                        results[i] = SpoolUnavailableError("message too large for the spool")
                        continue
                    bcrc = zlib.crc32(body)
                    hdr = encode_record(STORE, mid, nrcpt, blob, body=body, bcrc=bcrc)
                    stores.append((i, mid, nrcpt, hdr, blob, body, bcrc))
                case Mark(updates=ups):
                    items = [
                        (
                            u.msg_id,
                            u.rcpt_index,
                            u.state._value_,
                            min(u.attempts, _MAX_U32),
                            u.next_attempt,
                            u.detail,
                        )
                        for u in ups
                    ]
                    marks += index.valid_marks(items, gone)
                    others.append(i)
                case Remove(msg_id=mid):
                    if mid in msgs and mid not in gone:
                        removes.append(mid)
                        gone.add(mid)
                    others.append(i)
        tail: list[tuple[int, int, bytes, bytes]] = []  # (kind, count, header, meta)
        if marks:
            meta = mark_items(marks)
            tail.append((MARK, len(marks), encode_record(MARK, 0, len(marks), meta), meta))
        if removes:
            meta = array("Q", removes).tobytes()
            tail.append((REMOVE, len(removes), encode_record(REMOVE, 0, len(removes), meta), meta))
        store_len = sum(len(h) + len(b) + len(body) for _, _, _, h, b, body, _ in stores)
        tail_len = sum(len(h) + len(m) for _, _, h, m in tail)
        if not stores and not tail:
            return results
        err: SpoolError | None = None
        try:
            if not self._fits(store_len + tail_len, stores=bool(stores)):
                self._rotate(store_len + tail_len)
        except SpoolError as exc:
            err = exc
        if err is not None:
            # No new segment (full, or failing): stores fail; progress and removals still go
            # into what is left of the active segment, since they let space be freed.
            for i, *_ in stores:
                results[i] = err
            stores = []
            if not tail or not self._fits(tail_len, stores=False):
                for i in others:
                    results[i] = err
                return results
        try:
            self._commit(stores, tail, marks, removes)
        except SpoolError as exc:
            for i, *_ in stores:
                results[i] = exc
            for i in others:
                results[i] = exc
            return results
        for i, mid, *_ in stores:
            results[i] = mid
        try:
            self._housekeeping(bool(removes))
        except Exception as exc:  # the batch is durable whatever happens here
            log.error("spool: housekeeping failed: %s", exc)
        return results

    def _fits(self, n: int, *, stores: bool) -> bool:
        head = _HEAD_SIZE if self._pos == 0 else 0
        room = self._cap - (self._reserve if stores else 0)
        return self._pos + head + n <= room

    def _commit(
        self,
        stores: list[tuple[int, int, int, bytes, bytes, bytes, int]],
        tail: list[tuple[int, int, bytes, bytes]],
        marks: list[MarkItem],
        removes: list[int],
    ) -> None:
        seg = self.active
        parts: list[bytes | memoryview] = []
        entries: list[_Entry] = []
        placed: list[tuple[int, int, int, int]] = []  # (mid, off, size, nrcpt)
        off = self._pos
        if off == 0:
            off = self._head(parts, entries)
        for _, mid, nrcpt, hdr, blob, body, bcrc in stores:
            parts += (hdr, blob, body)
            entries.append((off, STORE, mid, nrcpt, len(body), bcrc, blob))
            size = HDR_SIZE + len(blob) + len(body)
            placed.append((mid, off, size, nrcpt))
            off += size
        for kind, count, hdr, meta in tail:
            parts += (hdr, meta)
            entries.append((off, kind, 0, count, 0, 0, meta))
            off += len(hdr) + len(meta)
        self._write(b"".join(parts), sync=bool(stores or marks) or self._sync_removes)
        index = self.index
        with index.lock:
            for mid, roff, size, nrcpt in placed:
                index.store(seg, roff, size, mid, nrcpt)
            if marks:
                index.mark(seg, marks)
            if removes:
                index.remove(seg, removes)
            self.entries += entries

    def _head(self, parts: list[bytes | memoryview], entries: list[_Entry]) -> int:
        """Start a fresh segment with its HEAD record (the id ceiling); the next offset."""
        ceiling = self.index.max_id + 1
        hdr = encode_record(HEAD, ceiling, 0, HEAD_MAGIC)
        parts += (hdr, HEAD_MAGIC)
        entries.append((0, HEAD, ceiling, 0, 0, 0, HEAD_MAGIC))
        return _HEAD_SIZE

    def _write(self, data: bytes, *, sync: bool = True) -> None:
        """Write ``data`` at the end of the active segment and (if ``sync``) make it, and
        everything written before it, durable."""
        fd = self._fd
        pos = self._pos
        try:
            if fd is None:
                raise SpoolUnavailableError("the active segment is not open")
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], pos + done)
            if sync:
                os.fdatasync(fd)
        except OSError as exc:
            self._undo(pos, len(data))
            raise map_os_error(exc, "write the spool") from exc
        self._pos = pos + len(data)
        self._dirty = not sync

    def _flush(self) -> None:
        """Make unsynced removes durable (before sealing or closing the segment)."""
        if self._dirty and self._fd is not None:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise map_os_error(exc, "sync the spool") from exc
            self._dirty = False

    def _undo(self, pos: int, length: int) -> None:
        """Zero a failed write's bytes so that no part of it is ever recovered."""
        fd = self._fd
        if fd is None:
            return
        zeros = memoryview(bytes(min(length, self._cap - pos)))
        try:
            done = 0
            while done < len(zeros):
                done += os.pwrite(fd, zeros[done:], pos + done)
            os.fdatasync(fd)
        except OSError as exc:
            log.error("spool: cannot clear a failed write in segment %d: %s", self.active, exc)
            self._cap = self._pos  # seal it at the next batch; its sidecar ends here

    # -- segments ------------------------------------------------------------------------

    def _rotate(self, need: int) -> None:
        """Seal the active segment and open the next one, big enough for ``need`` bytes."""
        size = max(self._segment_size, need + _HEAD_SIZE)
        if self._max_bytes is not None and self.disk_bytes + size > self._max_bytes:
            raise SpoolFullError(f"spool full: {self.disk_bytes} bytes of {self._max_bytes}")
        self._flush()  # unsynced removes of the segment being sealed
        seg = self.active + 1
        got = self._prep.take(seg, size, minimum=need + _HEAD_SIZE)
        path = os.path.join(self._dir, seg_name(seg))
        try:
            wfd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise map_os_error(exc, "open a segment") from exc
        try:
            rfd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            os.close(wfd)
            raise map_os_error(exc, "open a segment") from exc
        self._write_sidecar()
        if self._fd is not None:
            os.close(self._fd)
        self._fd = wfd
        self._sizes[seg] = got
        self.fds[seg] = rfd
        index = self.index
        with index.lock:  # recover() snapshots (active, entries) together
            index.add_segment(seg)
            self.active = seg
            self.entries = []
        self._cap = got
        self._pos = 0

    def _write_sidecar(self) -> None:
        """The active segment's sidecar (no fsync: it is checked, and rebuilt if bad)."""
        data = encode_sidecar(self.entries)
        try:
            with open(os.path.join(self._dir, sidecar_name(self.active)), "wb") as f:
                f.write(data)
        except OSError as exc:
            log.warning("spool: cannot write the sidecar of segment %d: %s", self.active, exc)

    def _housekeeping(self, removed: bool) -> None:
        if (
            self._pos > self._cap // 2
            and not self._prep.busy
            and not self._prep.ready_size
            and (
                self._max_bytes is None
                or self.disk_bytes + 2 * self._segment_size <= self._max_bytes
            )
        ):
            self._prep.start(self._segment_size)
        if removed:
            self._delete_dead()
        if self._compact_pause:
            self._compact_pause -= 1
        elif self.disk_bytes > COMPACT_RATIO * self.index.live_bytes + 2 * self._segment_size:
            try:
                self._compact_step()
            except SpoolError as exc:
                log.warning("spool: compaction step failed: %s", exc)
                self._compact_pause = COMPACT_IDLE_BATCHES
            self._delete_dead()

    def _delete_dead(self) -> None:
        index = self.index
        for seg in index.deletable(self.active):
            try:
                os.unlink(os.path.join(self._dir, seg_name(seg)))
                try:
                    os.unlink(os.path.join(self._dir, sidecar_name(seg)))
                except FileNotFoundError:
                    pass
                fsync_dir(self._dir)  # before any later segment that depends on it goes
            except OSError as exc:
                log.error("spool: cannot delete segment %d: %s", seg, exc)
                return
            with index.lock:
                index.drop_segment(seg)
            self._sizes.pop(seg, None)
            self._on_delete(seg)

    def _compact_step(self) -> None:
        """Copy up to COMPACT_STEP_BYTES of the oldest segment's live messages forward."""
        index = self.index
        seg = index.oldest_live(self.active)
        if seg is None:
            return
        if seg != self._compact_seg or not self._compact_todo:
            self._compact_seg = seg
            self._compact_todo = index.in_segment(seg, 1 << 62)
            self._compact_todo.reverse()
        rfd = self.fds.get(seg)
        if rfd is None:
            return
        todo = self._compact_todo
        msgs = index.msgs
        moved: list[tuple[int, bytes, bytes, memoryview, int, int]] = []
        total = 0
        while todo and total < COMPACT_STEP_BYTES:
            mid, p = todo.pop()
            if msgs.get(mid) != p:
                continue  # removed or already moved
            _, off, size, nrcpt = unpack(p)
            try:
                rec = os.pread(rfd, size, off)
            except OSError as exc:
                raise map_os_error(exc, "read for compaction") from exc
            got = _record_parts(rec, mid)
            if got is None:
                log.error("spool: message %d in segment %d unreadable; left in place", mid, seg)
                continue
            env, body, bcrc = got
            meta = encode_moved(env, index.progress_items(mid))
            hdr = encode_record(MOVED, mid, nrcpt, meta, body=body, bcrc=bcrc)
            moved.append((mid, hdr, meta, body, nrcpt, bcrc))
            total += len(hdr) + len(meta) + len(body)
        if not moved:
            self._compact_pause = COMPACT_IDLE_BATCHES  # nothing movable: do not rescan
            return
        if not self._fits(total, stores=False):
            self._rotate(total)
        parts: list[bytes | memoryview] = []
        placed: list[tuple[int, int, int, int]] = []
        entries: list[_Entry] = []
        off = self._pos
        if off == 0:
            off = self._head(parts, entries)
        for mid, hdr, meta, body, nrcpt, bcrc in moved:
            parts += (hdr, meta, body)
            entries.append((off, MOVED, mid, nrcpt, len(body), bcrc, meta))
            size = len(hdr) + len(meta) + len(body)
            placed.append((mid, off, size, nrcpt))
            off += size
        self._write(b"".join(parts))
        active = self.active
        with index.lock:
            for mid, roff, size, nrcpt in placed:
                items = index.progress_items(mid)
                index.store(active, roff, size, mid, nrcpt, items=items)
            self.entries += entries

    def close(self) -> None:
        if self.close_on_exit:
            try:
                self._flush()
            except SpoolError as exc:
                log.error("spool: %s", exc)
        self._prep.wait()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _record_parts(rec: bytes, mid: int) -> tuple[bytes | memoryview, memoryview, int] | None:
    """(envelope, body, body CRC) of a STORE or MOVED record of ``mid``, or None."""
    if len(rec) < HDR_SIZE:
        return None
    found = next(iter(scan_segment(memoryview(rec), check_bodies=False)), None)
    if found is None or isinstance(found, Bad):
        return None
    _, kind, key, count, _, bcrc, meta = found
    if key != mid or kind not in (STORE, MOVED):
        return None
    body = memoryview(rec)[HDR_SIZE + len(meta) :]
    if kind == STORE:
        return meta, body, bcrc
    try:
        env, _ = decode_moved(meta, count)
    except (ValueError, struct.error) as exc:
        log.error("spool: bad MOVED record of %d: %s", mid, exc)
        return None
    return env, body, bcrc
