"""Accounting files on disk and accounting pipes (the thin edge of ``acct``).

``AcctFile`` appends rows to ``<acct-file PATH>``; ``AcctPipe`` feeds ``<acct-file |COMMAND>``;
``AcctLog`` fans records out to every target whose ``records`` selection wants them. Rows are
formatted at once but written in batches: ``write`` only buffers, ``flush`` writes the batch
with one system call, and nothing is fsync'd (accounting is a log, not the spool; DESIGN §5).
Call ``flush()`` after each batch of outcomes and ``tick()`` every second or so; a buffer over
``max_buffer`` bytes flushes by itself.

Files. A new file starts with the header line. At start-up an existing non-empty file with the
same header is appended to; one with another header is rotated away first. Rotation closes
PATH, renames it to ``STEM-YYYY-MM-DD-HHMMSS.EXT`` (the time the file was started, in the
record time zone; ``-1``, ``-2`` … on a clash), inside ``move-to`` if set, else beside PATH, and
starts a new PATH. It happens when the next batch would take the file past ``max-size`` (a
file never rotates while it holds only its header) and at each ``move-interval`` boundary of
the wall clock (intervals counted from the epoch, so 5m rotates at :00, :05, …) if the file
has rows. ``delete-after`` removes rotated files (of this PATH's name pattern) closed that long
ago, by their modification time, which is set to the rotation time; it is checked at each
rotation and at start-up.

Pipes. ``|COMMAND`` is run by ``/bin/sh -c`` with its stdin a pipe; each process's stream
starts with the header line. Writes never block the event loop: what the pipe does not take
stays buffered, until the backlog passes ``max_pipe_backlog`` bytes, when a write blocks (back
pressure rather than lost records). If the command exits or its pipe breaks, it is restarted
(at most once per ``PIPE_RESTART_DELAY`` seconds) and gets the header again plus every row the
dead process had not read (rows still in the pipe's kernel buffer count as unread, by
FIONREAD): a row it read only part of is resent whole, so a consumer may see that one row
twice but never loses one.

Public names: AcctFileSettings, AcctFile, AcctPipe, AcctLog, open_acct_target, AcctError,
rotated_name. Writes raise AcctError (rows stay buffered and are retried at the next flush).
"""

from __future__ import annotations

import array
import fcntl
import os
import re
import shutil
import subprocess
import termios
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from sluice.acct.records import DEFAULT_LAYOUT, AcctLayout, AcctRecord, TimeFormatter
from sluice.clock import Clock
from sluice.errors import Fault, SluiceError

__all__ = [
    "AcctError",
    "AcctFile",
    "AcctFileSettings",
    "AcctLog",
    "AcctPipe",
    "open_acct_target",
    "rotated_name",
]

#: Bytes buffered before a write flushes by itself (a few hundred rows; one write call).
MAX_BUFFER = 256 * 1024
#: Bytes a slow pipe consumer may fall behind before writes block (back pressure).
MAX_PIPE_BACKLOG = 16 * 1024 * 1024
#: Seconds between restarts of a pipe command that keeps dying.
PIPE_RESTART_DELAY = 1.0
#: Seconds to wait for a pipe command to exit after its stdin is closed at shutdown.
PIPE_CLOSE_TIMEOUT = 5.0
_TIME_FORMAT = "%Y-%m-%d-%H%M%S"


class AcctError(SluiceError):
    """An accounting file or pipe could not be written (disk full, permissions, …)."""

    fault = Fault.RESOURCE
    reply_hint = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctFileSettings:
    """One ``<acct-file>`` block, mapped from the configuration by the daemon.

    ``target`` is a path or ``|command``; durations are seconds, ``max_size`` bytes;
    ``tz`` None means the machine's local time zone.
    """

    target: str
    layout: AcctLayout = DEFAULT_LAYOUT
    move_interval: float | None = None
    max_size: int | None = None
    delete_after: float | None = None
    move_to: str | None = None
    world_readable: bool = False
    tz: tzinfo | None = None
    max_buffer: int = MAX_BUFFER
    max_pipe_backlog: int = MAX_PIPE_BACKLOG


def _zone(settings: AcctFileSettings, now: float) -> tzinfo:
    if settings.tz is not None:
        return settings.tz
    local = datetime.fromtimestamp(now, UTC).astimezone().tzinfo
    return local if local is not None else UTC


def rotated_name(path: Path, started: float, tz: tzinfo) -> str:
    """``acct.csv`` started at ``started`` → ``acct-2027-01-15-080000.csv``."""
    stamp = datetime.fromtimestamp(int(started), tz).strftime(_TIME_FORMAT)
    return f"{path.stem}-{stamp}{path.suffix}"


class _Sink:
    """What files and pipes share: the layout, the row buffer, the record time zone."""

    def __init__(self, settings: AcctFileSettings, clock: Clock) -> None:
        self.settings = settings
        self.layout = settings.layout
        self._clock = clock
        self._rows: list[str] = []
        self._buffered = 0
        self._times = TimeFormatter(_zone(settings, clock.wall()))
        self._header = self.layout.header().encode()

    def wants(self, record: AcctRecord) -> bool:
        return self.layout.wants(record.type)

    def write(self, record: AcctRecord) -> None:
        """Format and buffer ``record`` (ignored if this target does not take its type)."""
        if not self.layout.wants(record.type):
            return
        row = self.layout.row(record, times=self._times)
        self._rows.append(row)
        self._buffered += len(row)
        if self._buffered >= self.settings.max_buffer:
            self.flush()

    def _take_batch(self) -> bytes:
        data = "".join(self._rows).encode()
        self._rows.clear()
        self._buffered = 0
        return data

    def _restore_batch(self, data: bytes) -> None:
        self._rows.insert(0, data.decode())
        self._buffered += len(data)

    def flush(self) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Periodic work: flush, and rotation or restarts that are due."""
        self._times = TimeFormatter(_zone(self.settings, self._clock.wall()))
        self.flush()

    def close(self) -> None:
        raise NotImplementedError


class AcctFile(_Sink):
    """An accounting CSV file with rotation."""

    def __init__(self, settings: AcctFileSettings, clock: Clock) -> None:
        super().__init__(settings, clock)
        self.path = Path(settings.target)
        self._fd = -1
        self._size = 0
        self._started = 0.0
        self._next_move: float | None = None
        self._open(existing_ok=True)
        self._purge()

    # --- public ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    def flush(self) -> None:
        """Write buffered rows (one write call), rotating first if they would overflow
        ``max-size``, and after if a ``move-interval`` boundary has passed."""
        if self._rows:
            self._skip_empty_interval()
            data = self._take_batch()
            limit = self.settings.max_size
            try:
                if limit and self._size > len(self._header) and self._size + len(data) > limit:
                    self._rotate()
                self._write_all(data)
            except OSError as exc:
                self._restore_batch(data)
                raise AcctError(f"cannot write accounting file {self.path}: {exc}") from exc
            except AcctError:
                self._restore_batch(data)
                raise
        if self._time_to_move(self._clock.wall()):
            self._rotate()

    def rotate(self) -> None:
        """Flush, then rotate now (if the file holds any rows)."""
        self.flush()
        if self._size > len(self._header):
            self._rotate()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # --- internals ---------------------------------------------------------------------------

    def _skip_empty_interval(self) -> None:
        # A header-only file that outlived its interval starts a fresh one with its first row.
        now = self._clock.wall()
        interval = self.settings.move_interval
        if (
            interval
            and self._next_move is not None
            and now >= self._next_move
            and self._size <= len(self._header)
        ):
            self._started = now
            self._next_move = (now // interval + 1) * interval

    def _time_to_move(self, now: float) -> bool:
        return (
            self._next_move is not None
            and now >= self._next_move
            and self._size > len(self._header)
        )

    def _open(self, *, existing_ok: bool) -> None:
        now = self._clock.wall()
        mode = 0o644 if self.settings.world_readable else 0o640
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if existing_ok and self.path.exists() and self.path.stat().st_size > 0:
                with self.path.open("rb") as f:
                    first = f.readline()
                if first != self._header:
                    self._started = now
                    self._move_away()
            self._fd = os.open(self.path, flags, mode)
            self._size = os.fstat(self._fd).st_size
            if self._size == 0:
                os.fchmod(self._fd, mode)  # umask may have narrowed it
                self._write_all(self._header)
        except OSError as exc:
            raise AcctError(f"cannot open accounting file {self.path}: {exc}") from exc
        self._started = now
        interval = self.settings.move_interval
        self._next_move = (now // interval + 1) * interval if interval else None

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            self._move_away()
        finally:
            self._open(existing_ok=False)  # on failure: keep appending to the same file
        self._purge()

    def _destination_dir(self) -> Path:
        return Path(self.settings.move_to) if self.settings.move_to else self.path.parent

    def _move_away(self) -> None:
        directory = self._destination_dir()
        name = rotated_name(self.path, self._started, self._times.tz)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / name
            n = 0
            while target.exists():
                n += 1
                target = directory / f"{Path(name).stem}-{n}{self.path.suffix}"
            shutil.move(self.path, target)
            # The modification time says when the file was closed (by our clock), which is
            # what delete-after counts from.
            now = self._clock.wall()
            os.utime(target, (now, now))
        except OSError as exc:
            raise AcctError(f"cannot move accounting file {self.path}: {exc}") from exc

    def _purge(self) -> None:
        keep = self.settings.delete_after
        if keep is None:
            return
        pattern = re.compile(
            re.escape(self.path.stem)
            + r"-\d{4}-\d\d-\d\d-\d{6}(?:-\d+)?"
            + re.escape(self.path.suffix)
            + "$"
        )
        now = self._clock.wall()
        directory = self._destination_dir()
        try:
            entries = list(directory.iterdir()) if directory.is_dir() else []
            for entry in entries:
                if pattern.match(entry.name) and entry.stat().st_mtime + keep <= now:
                    entry.unlink(missing_ok=True)
        except OSError as exc:
            raise AcctError(f"cannot purge old accounting files in {directory}: {exc}") from exc


class AcctPipe(_Sink):
    """An accounting pipe: rows go to the stdin of a command, restarted if it dies."""

    def __init__(self, settings: AcctFileSettings, clock: Clock) -> None:
        super().__init__(settings, clock)
        self.command = settings.target.strip().removeprefix("|").strip()
        if not self.command:
            raise AcctError("an accounting pipe needs a command after '|'")
        self._proc: subprocess.Popen[bytes] | None = None
        # Bytes not yet read by the command, from a row boundary: the first ``_sent`` of them
        # sit in the pipe's kernel buffer, the rest wait for room.
        self._pending = bytearray()
        self._sent = 0
        self._last_start = float("-inf")
        #: How many times the command was started (1 + restarts).
        self.starts = 0
        self._start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def flush(self) -> None:
        """Hand buffered rows to the command, as far as its pipe takes them without blocking."""
        if self._rows:
            self._pending += self._take_batch()
        if self._proc is None or self._proc.poll() is not None:
            self._restart()
            if self._proc is None:
                return
        self._pump(block=len(self._pending) - self._sent > self.settings.max_pipe_backlog)

    def close(self) -> None:
        """Hand over everything left (restarting a dead command once more), then wait for
        the command to exit."""
        if self._rows:
            self._pending += self._take_batch()
        if (self._proc is None or self._proc.poll() is not None) and self._pending:
            self._restart(force=True)
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._pump(block=True)
            proc = self._proc
            if proc is None:
                return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            proc.wait(timeout=PIPE_CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._proc = None

    def _start(self) -> None:
        self._last_start = self._clock.monotonic()
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", self.command], stdin=subprocess.PIPE, close_fds=True
            )
        except OSError as exc:
            self._proc = None
            raise AcctError(f"cannot start accounting pipe {self.command!r}: {exc}") from exc
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)
        self._proc = proc
        self.starts += 1
        if self._pending.startswith(self._header):
            del self._pending[: len(self._header)]  # the last process never read all of it
        self._pending[0:0] = self._header
        self._sent = 0

    def _restart(self, *, force: bool = False) -> None:
        proc = self._proc
        if proc is not None:
            assert proc.stdin is not None
            # What the dead process never read is still in the pipe: send it again.
            self._sent -= _unread(proc.stdin.fileno())
            keep_from = self._pending.rfind(b"\n", 0, self._sent) + 1
            del self._pending[:keep_from]  # a row it read only part of is resent whole
            self._sent = 0
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.wait()
            self._proc = None
        if not force and self._clock.monotonic() - self._last_start < PIPE_RESTART_DELAY:
            return  # try again at a later flush/tick
        self._start()

    def _pump(self, *, block: bool) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        if block:
            os.set_blocking(fd, True)
        try:
            while self._sent < len(self._pending):
                try:
                    written = os.write(fd, memoryview(self._pending)[self._sent :])
                except BlockingIOError:
                    break
                except (BrokenPipeError, ConnectionResetError):
                    proc.wait()
                    self._restart()
                    return
                self._sent += written
        finally:
            if block and self._proc is proc:
                os.set_blocking(fd, False)
        # Forget the rows the command has read completely.
        read = self._sent - _unread(fd)
        done = self._pending.rfind(b"\n", 0, read) + 1
        if done:
            del self._pending[:done]
            self._sent -= done


def _unread(fd: int) -> int:
    """Bytes written to the pipe ``fd`` that its reader has not read yet (Linux FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return int(count[0])


def open_acct_target(settings: AcctFileSettings, clock: Clock) -> AcctFile | AcctPipe:
    """An ``AcctPipe`` for ``|command`` targets, else an ``AcctFile``."""
    if settings.target.lstrip().startswith("|"):
        return AcctPipe(settings, clock)
    return AcctFile(settings, clock)


class AcctLog:
    """All accounting targets of the configuration; ``record`` sends a record to each that
    wants it."""

    def __init__(self, targets: Sequence[AcctFile | AcctPipe]) -> None:
        self.targets = tuple(targets)

    @classmethod
    def open(cls, settings: Iterable[AcctFileSettings], clock: Clock) -> AcctLog:
        return cls([open_acct_target(s, clock) for s in settings])

    def record(self, record: AcctRecord) -> None:
        for target in self.targets:
            target.write(record)

    def flush(self) -> None:
        self._each(lambda t: t.flush())

    def tick(self) -> None:
        self._each(lambda t: t.tick())

    def close(self) -> None:
        self._each(lambda t: t.close())

    def _each(self, action: Callable[[AcctFile | AcctPipe], None]) -> None:
        errors: list[AcctError] = []
        for target in self.targets:
            try:
                action(target)
            except AcctError as exc:  # one broken target must not starve the others
                errors.append(exc)
        if errors:
            raise errors[0]
