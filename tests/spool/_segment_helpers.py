"""Helpers shared by the SegmentSpool tests: segment files read the way a human would."""

from __future__ import annotations

from pathlib import Path

from sluice.spool import SegmentSpool
from sluice.spool._segment_rec import HDR, HDR_SIZE

BODY = b"Subject: x\r\n\r\n" + b"y" * 2034 + b"\r\n"  # 2 KB
SMALL = 64 * 1024


def segs(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.log"))


def records(seg: Path) -> list[tuple[int, int, int, int]]:
    """(offset, kind, key, size) of every record in a segment file, until the zeros."""
    data = seg.read_bytes()
    out = []
    pos = 0
    while pos + HDR_SIZE <= len(data):
        _, kind, ver, _, mlen, blen, key, _, _, _ = HDR.unpack_from(data, pos)
        if ver == 0:
            break
        size = HDR_SIZE + mlen + blen
        out.append((pos, kind, key, size))
        pos += size
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


async def ids_after_reopen(path: Path, **kw: int) -> list[int]:
    spool = await SegmentSpool.open(str(path), **kw)  # type: ignore[arg-type]
    try:
        return [m.msg_id for m in spool.recover()]
    finally:
        await spool.close()
