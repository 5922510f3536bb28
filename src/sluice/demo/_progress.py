"""What the live display shows: per-queue rows built from the scheduler and the accounting file.

The scheduler's :class:`~sluice.sched.QueueSnapshot` says what a queue holds *now* (ready,
deferred, in flight, connections, mode, last events); the accounting file says what became of
each recipient (``d``, ``b``, ``t`` records, and ``r`` for every recipient received). The
display reads the file as a dashboard would: :class:`AcctTail` follows it and counts records
per queue. :class:`Progress` merges both into :class:`QueueRow` values and remembers each
queue's mode changes (:class:`ModeChange`) for the plain-text progress lines.

Public names: AcctTail, Counts, QueueRow, ModeChange, Progress.
Nothing here raises: an accounting file that does not exist yet reads as empty.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass

from sluice.sched import EventType, QueueMode, QueueSnapshot

__all__ = ["AcctTail", "Counts", "ModeChange", "Progress", "QueueRow"]

#: Characters of an event's text kept for the display.
EVENT_TEXT = 120


class Counts:
    """Records of one queue by type."""

    __slots__ = ("bounced", "delivered", "transient")

    def __init__(self) -> None:
        self.delivered = 0
        self.bounced = 0
        self.transient = 0


class AcctTail:
    """Follows an accounting CSV file, counting records per queue and type."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.by_queue: dict[str, Counts] = {}
        self.received = 0
        #: Final records (d or b) of mail with a sender, and of DSNs (null sender).
        self.bounces = 0
        self.dsn_finals = 0
        self._offset = 0
        self._partial = b""
        self._header: list[str] | None = None
        self._type = 0
        self._queue = -1
        self._orig = -1

    def poll(self) -> None:
        """Read what was appended since the last call."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        data = self._partial + chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        self._count(data[:end].decode("utf-8", "replace").splitlines())

    def _count(self, lines: Iterable[str]) -> None:
        for row in csv.reader(lines):
            if not row:
                continue
            if self._header is None:
                self._header = row
                self._type = row.index("type") if "type" in row else 0
                self._queue = row.index("queue") if "queue" in row else -1
                self._orig = row.index("orig") if "orig" in row else -1
                continue
            kind = row[self._type]
            if kind == "r":
                self.received += 1
                continue
            queue = row[self._queue] if 0 <= self._queue < len(row) else ""
            counts = self.by_queue.get(queue)
            if counts is None:
                counts = self.by_queue[queue] = Counts()
            dsn = 0 <= self._orig < len(row) and row[self._orig] == ""
            if kind == "d":
                counts.delivered += 1
                self.dsn_finals += dsn
            elif kind == "b":
                counts.bounced += 1
                if dsn:
                    self.dsn_finals += 1
                else:
                    self.bounces += 1
            elif kind == "t":
                counts.transient += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueRow:
    """One line of the live table."""

    queue: str
    #: Recipients ready or in flight / waiting for a retry, now.
    queued: int
    deferred: int
    delivered: int
    bounced: int
    #: ``t`` records so far (each deferral of a recipient).
    deferrals: int
    connections: int
    #: ``normal``, ``backoff``, ``retry`` (retry mode after a site failure) or ``paused``.
    mode: str
    #: The last event: "type: reply text" (empty when none yet).
    event: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChange:
    """A queue changed mode (for the plain-text progress lines)."""

    queue: str
    mode: str
    event: str


def _mode(snap: QueueSnapshot) -> str:
    if snap.paused:
        return "paused"
    if snap.retry_mode_until is not None:
        return "retry"
    return str(snap.mode.value)


def _event(snap: QueueSnapshot) -> str:
    """The event to show: while a queue is not in normal mode, the one that changed its mode
    (the reply and the action taken); otherwise the latest."""
    if not snap.events:
        return ""
    last = snap.events[-1]
    if snap.mode is not QueueMode.NORMAL:
        for event in reversed(snap.events):
            if event.type is EventType.MODE:
                last = event
                break
    text = " ".join(last.text.split())
    line = f"{last.action} ← {text}" if last.action else f"{last.type.value}: {text}"
    return line if len(line) <= EVENT_TEXT else line[: EVENT_TEXT - 1] + "…"


class Progress:
    """Merges snapshots and accounting counts into rows; remembers modes and events."""

    def __init__(self) -> None:
        self._mode: dict[str, str] = {}
        self._event: dict[str, str] = {}
        self.changes: list[ModeChange] = []
        #: The most connections seen at once in any one queue (by queue).
        self.peak_connections: dict[str, int] = {}

    def rows(self, snapshots: Iterable[QueueSnapshot], tail: AcctTail) -> list[QueueRow]:
        live: dict[str, QueueSnapshot] = {s.name: s for s in snapshots}
        for name, snap in live.items():
            mode = _mode(snap)
            event = _event(snap) or self._event.get(name, "")
            if self._mode.get(name, "normal") != mode:
                self.changes.append(ModeChange(queue=name, mode=mode, event=event))
            self._mode[name] = mode
            self._event[name] = event
            conns = snap.connections + snap.connecting
            if conns > self.peak_connections.get(name, 0):
                self.peak_connections[name] = conns
        names = sorted(set(live) | {q for q in tail.by_queue if q}, key=_order)
        out: list[QueueRow] = []
        for name in names:
            now = live.get(name)
            counts = tail.by_queue.get(name) or Counts()
            out.append(
                QueueRow(
                    queue=name,
                    queued=0 if now is None else now.ready + now.in_flight,
                    deferred=0 if now is None else now.deferred,
                    delivered=counts.delivered,
                    bounced=counts.bounced,
                    deferrals=counts.transient,
                    connections=0 if now is None else now.connections + now.connecting,
                    mode=self._mode.get(name, "normal"),
                    event=self._event.get(name, ""),
                )
            )
        return out

    def take_changes(self) -> list[ModeChange]:
        changes, self.changes = self.changes, []
        return changes


def _order(queue: str) -> tuple[str, str]:
    domain, _, vmta = queue.partition("/")
    return domain, vmta
