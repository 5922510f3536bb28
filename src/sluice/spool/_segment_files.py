"""File handling for the segment spool: names, preallocation, directory syncs, quarantine.

Segments are preallocated by writing zeros (``next.tmp``, fsync'd, renamed into place and
the directory fsync'd): an ``fdatasync`` that overwrites allocated blocks need not commit
file-size metadata. Measured here (ext4, 12 KB per sync): append 70 µs of system CPU per
sync and 3,900 syncs/s; posix_fallocate 50 µs, 5,100/s; zero-filled 30 µs, 9,200/s.

Public names: seg_name, sidecar_name, seg_number, fsync_dir, Preparer, quarantine,
map_os_error, SEGMENT_SIZE, PREPARED_NAME, LOCK_NAME, QUARANTINE_DIR.
Raises: SpoolFullError (ENOSPC, EDQUOT, or the quota) and SpoolUnavailableError
(map_os_error; Preparer.take).
"""

from __future__ import annotations

import errno
import logging
import os
import threading

from sluice.errors import SpoolError, SpoolFullError, SpoolUnavailableError

__all__ = [
    "LOCK_NAME",
    "PREPARED_NAME",
    "QUARANTINE_DIR",
    "SEGMENT_SIZE",
    "Preparer",
    "fsync_dir",
    "map_os_error",
    "quarantine",
    "seg_name",
    "seg_number",
    "sidecar_name",
]

log = logging.getLogger("sluice.spool")

#: Nominal segment size. DESIGN §2 measured the segment log with 64 MiB files; a sealed
#: segment's sidecar is ~3 MB, the active one is scanned whole at start (<0.1 s warm).
SEGMENT_SIZE = 64 * 1024 * 1024
PREPARED_NAME = "next.tmp"
LOCK_NAME = "spool.lock"
QUARANTINE_DIR = "quarantine"
_ZEROS = bytes(1 << 20)


def seg_name(seg: int) -> str:
    return f"seg-{seg:08d}.log"


def sidecar_name(seg: int) -> str:
    return f"seg-{seg:08d}.idx"


def seg_number(name: str) -> int | None:
    """The segment number of a ``seg-NNNNNNNN.log`` name, else None."""
    if name.startswith("seg-") and name.endswith(".log") and name[4:-4].isdigit():
        return int(name[4:-4])
    return None


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: The errors that mean "no room" (a full disk, a quota).
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def map_os_error(exc: BaseException, what: str) -> SpoolError:
    """The SpoolError for a foreign exception (DESIGN: map at the edge)."""
    if isinstance(exc, SpoolError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return SpoolFullError(f"spool full while trying to {what}: {exc}")
    return SpoolUnavailableError(f"spool failed to {what}: {exc}")


def _zero_fill(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size
        while left > 0:
            n = os.write(fd, _ZEROS[: min(left, len(_ZEROS))])
            left -= n
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


class Preparer:
    """Zero-fills the next segment file ahead of need on a short-lived background thread."""

    def __init__(self, dirpath: str) -> None:
        self._dir = dirpath
        self._path = os.path.join(dirpath, PREPARED_NAME)
        self._thread: threading.Thread | None = None
        self._size = 0
        self._error: BaseException | None = None
        self.ready_size = 0

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, size: int) -> None:
        """Begin preparing a file of ``size`` bytes (no-op if one is ready or under way)."""
        if self._thread is not None or self.ready_size:
            return
        self._size = size
        self._error = None
        self._thread = threading.Thread(target=self._run, name="sluice-spool-prepare", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            _zero_fill(self._path, self._size)
        except BaseException as exc:
            self._error = exc

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is None:
                self.ready_size = self._size

    def take(self, seg: int, size: int, minimum: int | None = None) -> int:
        """Install a prepared file of at least ``size`` bytes as segment ``seg``; its size.

        Uses the background file if it is big enough, else prepares one now. On a nearly
        full disk (ENOSPC, EDQUOT) it settles for half the size, and half again, down to
        ``minimum`` (default ``size``): a daemon must still start, and deliver, when its
        disk is too full for a whole segment. The name is durable (directory fsync'd) on
        return.
        """
        self.wait()
        floor = size if minimum is None else min(size, minimum)
        if self.ready_size < floor:
            self.discard()
            want = size
            while True:
                try:
                    _zero_fill(self._path, want)
                    break
                except OSError as exc:
                    if exc.errno not in _FULL_ERRNOS or want <= floor:
                        raise map_os_error(exc, "create a segment") from exc
                    want = max(floor, want // 2)
            self.ready_size = want
        got = self.ready_size
        self.ready_size = 0
        try:
            os.rename(self._path, os.path.join(self._dir, seg_name(seg)))
            fsync_dir(self._dir)
        except OSError as exc:
            raise map_os_error(exc, "create a segment") from exc
        return got

    def discard(self) -> None:
        self.wait()
        self.ready_size = 0
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass


def quarantine(dirpath: str, seg: int, off: int, data: bytes, reason: str) -> None:
    """Keep damaged bytes for a human (Postfix's ``corrupt`` queue); never raises."""
    log.error("spool: segment %d offset %d quarantined (%d bytes): %s", seg, off, len(data), reason)
    qdir = os.path.join(dirpath, QUARANTINE_DIR)
    try:
        if not os.path.isdir(qdir):
            os.makedirs(qdir, mode=0o700, exist_ok=True)
            fsync_dir(dirpath)
        name = os.path.join(qdir, f"seg-{seg:08d}-{off:012d}.bad")
        with open(name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with open(os.path.join(qdir, "reasons.txt"), "a", encoding="utf-8") as f:
            f.write(f"{os.path.basename(name)}\t{reason}\n")
        fsync_dir(qdir)
    except OSError as exc:
        log.error("spool: could not write the quarantine copy: %s", exc)
