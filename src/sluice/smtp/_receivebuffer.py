"""The receive buffer: a bytearray with line search that never rescans what it already scanned.

Deleting from the front of a bytearray is O(1) in CPython (it moves its start pointer), so
consuming lines one by one from a large pipelined batch stays linear.

Public names: ReceiveBuffer.
"""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """Bytes received and not yet turned into events."""

    __slots__ = ("_data", "_scanned")

    def __init__(self) -> None:
        self._data = bytearray()
        # Bytes at the front known to contain no LF (so a trickled line is scanned once).
        self._scanned = 0

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def append(self, data: bytes) -> None:
        self._data += data

    @property
    def data(self) -> bytearray:
        """The buffered bytes (do not keep a reference across calls)."""
        return self._data

    def find_lf(self) -> int:
        """Index of the first LF, or -1 (remembering how far it looked)."""
        i = self._data.find(b"\n", self._scanned)
        self._scanned = len(self._data) if i < 0 else 0
        return i

    def take_line(self, i: int) -> tuple[bytes, bool]:
        """Remove the first line, whose LF is at ``i`` (from :meth:`find_lf`): ``(line
        without its ending, ended_with_bare_lf)``, copied once."""
        data = self._data
        self._scanned = 0
        if i > 0 and data[i - 1] == 0x0D:
            line = bytes(data[: i - 1])
            bare = False
        else:
            line = bytes(data[:i])
            bare = True
        if i + 1 == len(data):
            data.clear()
        else:
            del data[: i + 1]
        return line, bare

    def take(self, n: int) -> bytes:
        """Remove and return the first ``n`` bytes."""
        out = bytes(self._data[:n])
        del self._data[:n]
        self._scanned = 0
        return out

    def discard(self, n: int) -> None:
        del self._data[:n]
        self._scanned = 0

    def take_all(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        self._scanned = 0
        return out
