"""The segment spool's in-memory index: live messages, their progress, and segment liveness.

One :class:`Index` is built by replaying the records at open, then kept by the writer
thread, which applies each batch only after it is durable. The event loop reads ``msgs``
(a dict get is atomic) to find a body, and takes ``lock`` to snapshot for ``recover``.

Per message: ``msgs[id]`` packs (segment, record offset, record size, recipient count)
into one int (about 120 bytes a message with the dict entry, vs ~250 for a tuple);
``prog[id]`` exists only once a recipient was marked: a tuple, per recipient, of ``None``
(never marked) or ``(state, attempts, next_attempt, detail)``, replaced whole on change so
a snapshot never sees it half-updated.

Per segment: ``live`` counts the messages whose current STORE/MOVED record is in it, and
``deps`` the older segments it must outlive: a record about a message whose current record
is in segment ``s`` makes its own segment depend on ``s`` (a REMOVE must outlive the STORE
it cancels; a MOVED record the copy it supersedes). A segment other than the active one
can be deleted once ``live`` is 0 and every segment in ``deps`` is gone; replaying the
remaining segments in order then gives the same state.

Public names: Index, Progress, pack, unpack, and the shifts and mask to unpack inline.
Raises: nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from sluice.spool._segment_rec import MarkItem

__all__ = [
    "NRCPT_BITS",
    "OFF_BITS",
    "OFF_MASK",
    "OFF_SHIFT",
    "SEG_SHIFT",
    "SIZE_BITS",
    "Index",
    "Progress",
    "pack",
    "unpack",
]

#: One recipient's stored progress: None (never marked) or (state, attempts, next, detail).
Progress = tuple[tuple[int, int, float | None, str] | None, ...]

NRCPT_BITS = _NRCPT_BITS = 24
SIZE_BITS = _SIZE_BITS = 32
OFF_BITS = _OFF_BITS = 40
_NRCPT_MASK = (1 << _NRCPT_BITS) - 1
_SIZE_MASK = (1 << _SIZE_BITS) - 1
_OFF_MASK = (1 << _OFF_BITS) - 1
_SIZE_SHIFT = _NRCPT_BITS
OFF_SHIFT = _OFF_SHIFT = _NRCPT_BITS + _SIZE_BITS
SEG_SHIFT = _SEG_SHIFT = _OFF_SHIFT + _OFF_BITS
OFF_MASK = _OFF_MASK
#: Most recipients of one message the packed index can hold (RFC 5321 §4.5.3.1.8 asks for
#: at least 100; a spool message never comes near 16M).
MAX_RCPTS = _NRCPT_MASK
#: Largest record (envelope + body) the packed index can hold.
MAX_RECORD = _SIZE_MASK


def pack(seg: int, off: int, size: int, nrcpt: int) -> int:
    return (((seg << _OFF_BITS | off) << _SIZE_BITS) | size) << _NRCPT_BITS | nrcpt


def unpack(p: int) -> tuple[int, int, int, int]:
    """(segment, offset, size, recipient count)."""
    return (
        p >> _SEG_SHIFT,
        (p >> _OFF_SHIFT) & _OFF_MASK,
        (p >> _SIZE_SHIFT) & _SIZE_MASK,
        p & _NRCPT_MASK,
    )


class Index:
    """Live messages and per-segment bookkeeping (see the module docstring)."""

    __slots__ = ("deps", "live", "live_bytes", "lock", "max_id", "msgs", "prog")

    def __init__(self) -> None:
        self.msgs: dict[int, int] = {}
        self.prog: dict[int, Progress] = {}
        self.live: dict[int, int] = {}
        self.deps: dict[int, set[int]] = {}
        self.live_bytes = 0
        self.max_id = 0
        self.lock = threading.Lock()

    def add_segment(self, seg: int) -> None:
        self.live.setdefault(seg, 0)
        self.deps.setdefault(seg, set())

    def drop_segment(self, seg: int) -> None:
        del self.live[seg]
        del self.deps[seg]

    def store(
        self, seg: int, off: int, size: int, mid: int, nrcpt: int, *, items: Sequence[MarkItem] = ()
    ) -> None:
        """A STORE (or, with ``items``, MOVED) record of ``mid`` at ``seg``/``off``."""
        msgs = self.msgs
        old = msgs.get(mid)
        if old is not None:  # a moved copy supersedes the older one
            oseg = old >> _SEG_SHIFT
            self.live[oseg] -= 1
            self.live_bytes -= (old >> _SIZE_SHIFT) & _SIZE_MASK
            if oseg != seg:
                self.deps[seg].add(oseg)
            self.prog.pop(mid, None)
        msgs[mid] = pack(seg, off, size, nrcpt)
        self.live[seg] += 1
        self.live_bytes += size
        self.max_id = max(self.max_id, mid)
        if items:
            self.mark(seg, items)

    def valid_marks(self, items: Iterable[MarkItem], gone: set[int]) -> list[MarkItem]:
        """The items that name a live message (not in ``gone``) and one of its recipients."""
        msgs = self.msgs
        out = []
        for item in items:
            p = msgs.get(item[0])
            if p is not None and item[1] < (p & _NRCPT_MASK) and item[0] not in gone:
                out.append(item)
        return out

    def mark(self, seg: int, items: Iterable[MarkItem]) -> None:
        """Apply marks written to ``seg`` (items for unknown messages are ignored)."""
        msgs = self.msgs
        prog = self.prog
        deps = self.deps[seg]
        for mid, idx, state, attempts, next_at, detail in items:
            p = msgs.get(mid)
            if p is None:
                continue
            nrcpt = p & _NRCPT_MASK
            if idx >= nrcpt:
                continue
            s = p >> _SEG_SHIFT
            if s != seg:
                deps.add(s)
            cur = prog.get(mid)
            entry = (state, attempts, next_at, detail)
            if nrcpt == 1:
                prog[mid] = (entry,)
            else:
                lst: list[tuple[int, int, float | None, str] | None] = (
                    list(cur) if cur is not None else [None] * nrcpt
                )
                lst[idx] = entry
                prog[mid] = tuple(lst)

    def remove(self, seg: int, ids: Iterable[int]) -> None:
        """Apply a REMOVE record written to ``seg``."""
        msgs = self.msgs
        live = self.live
        deps = self.deps[seg]
        prog = self.prog
        for mid in ids:
            p = msgs.pop(mid, None)
            if p is None:
                continue
            s = p >> _SEG_SHIFT
            live[s] -= 1
            self.live_bytes -= (p >> _SIZE_SHIFT) & _SIZE_MASK
            if s != seg:
                deps.add(s)
            prog.pop(mid, None)

    def progress_items(self, mid: int) -> list[MarkItem]:
        """The marks that reproduce ``mid``'s progress (for a MOVED record)."""
        cur = self.prog.get(mid)
        if cur is None:
            return []
        return [(mid, i, *e) for i, e in enumerate(cur) if e is not None]

    def deletable(self, active: int) -> list[int]:
        """Segments (oldest first) that may be deleted now, each after the ones before it."""
        out: list[int] = []
        gone: set[int] = set()
        live = self.live
        for seg in sorted(live):
            if seg == active or live[seg]:
                continue
            if all(d not in live or d in gone for d in self.deps[seg]):
                out.append(seg)
                gone.add(seg)
        return out

    def oldest_live(self, active: int) -> int | None:
        """The oldest segment other than the active one that still holds live messages."""
        for seg in sorted(self.live):
            if seg != active and self.live[seg]:
                return seg
        return None

    def in_segment(self, seg: int, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` (id, packed) of live messages whose current record is in ``seg``."""
        out: list[tuple[int, int]] = []
        for mid, p in self.msgs.items():
            if p >> _SEG_SHIFT == seg:
                out.append((mid, p))
                if len(out) >= limit:
                    break
        return out
