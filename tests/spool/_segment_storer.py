"""Child process for the segment spool crash tests: store, mark and remove in a loop and
print each acknowledgement.

Usage: python _segment_storer.py SPOOL_DIR RUN SEGMENT_SIZE [COUNT]. CONCURRENCY tasks
store messages forever (or COUNT messages, then close); after each ``store()`` returns,
one line ``ACK <id> <token>`` is written with a single write(2). Four of every five
acknowledged messages are then removed (after their final mark): ``DEL <id>`` is printed
before, ``GONE <id>`` once the remove returned, so the parent knows which acknowledged
messages may be absent and which must be. Small segments and the few messages kept make
the child rotate, seal, delete and compact segments while it is being killed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from _storer import body_for, envelope_for, token

from sluice.message import RcptState
from sluice.spool import RcptUpdate, SegmentSpool

CONCURRENCY = 10


async def main(path: str, run: int, segment_size: int, count: int | None) -> None:
    spool = await SegmentSpool.open(path, segment_size=segment_size, defer=0.0)
    seqs = iter(range(count if count is not None else 10**9))

    async def worker() -> None:
        for seq in seqs:
            tok = token(run, seq)
            mid = await spool.store(envelope_for(tok), body_for(tok))
            os.write(1, f"ACK {mid} {tok}\n".encode())
            if seq % 5 and count is None:
                os.write(1, f"DEL {mid}\n".encode())
                await spool.mark(
                    [RcptUpdate(msg_id=mid, rcpt_index=0, state=RcptState.DELIVERED, attempts=1)]
                )
                await spool.remove(mid)
                os.write(1, f"GONE {mid}\n".encode())

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    await spool.close()


if __name__ == "__main__":
    n = int(sys.argv[4]) if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), n))
