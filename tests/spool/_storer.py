"""Child process for the spool crash tests: store messages, print each acknowledgement.

Usage: python _storer.py SPOOL_DIR RUN [COUNT]. Stores messages from CONCURRENCY tasks,
forever (or COUNT messages), and after each ``store()`` returns writes one line
``ACK <id> TOKEN-<run><seq>-END`` to stdout with a single write(2). The body and the
sender are derived from the token, so the parent can check what it recovers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys

from sluice.message import Envelope, Recipient
from sluice.spool import SqliteSpool

CONCURRENCY = 10


def token(run: int, seq: int) -> str:
    return f"TOKEN-{run:03d}{seq:07d}-END"


def envelope_for(tok: str) -> Envelope:
    return Envelope(
        sender=f"{tok}@sender.example",
        recipients=(Recipient(address=f"rcpt-{tok}@dest.example"),),
        vmta="vmta-a",
        arrival=1_800_000_000.0,
    )


def body_for(tok: str) -> bytes:
    """A body of 100-3000 bytes that carries the token (whole) and its own digest."""
    seed = hashlib.sha256(tok.encode()).digest()
    filler = seed.hex().encode() * (1 + seed[0] % 45)
    return b"Subject: " + tok.encode() + b"\r\n\r\n" + filler + b"\r\n"


async def main(path: str, run: int, count: int | None) -> None:
    spool = await SqliteSpool.open(path)
    seqs = iter(range(count) if count is not None else range(10**9))

    async def worker() -> None:
        for seq in seqs:
            tok = token(run, seq)
            mid = await spool.store(envelope_for(tok), body_for(tok))
            os.write(1, f"ACK {mid} {tok}\n".encode())

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await spool.close()


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
    )
