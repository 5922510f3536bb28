"""SegmentSpool durability: kill -9 under load (T02), fsync before ack (T01).

The kill tests run the storer with 64 KiB segments, so the child rotates, seals, deletes
and compacts segments while it is killed. The strace tests are marked ``interop``.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import strace_check
from _storer import body_for, envelope_for

from sluice.spool import SegmentSpool

HERE = Path(__file__).resolve().parent
STORER = str(HERE / "_segment_storer.py")
SEGMENT = 64 * 1024


class Log:
    """What the children printed: acknowledged ids, removals begun and finished."""

    def __init__(self) -> None:
        self.acked: dict[int, str] = {}
        self.deleting: set[int] = set()
        self.gone: set[int] = set()

    def add(self, out: bytes) -> Log:
        for line in out.decode().split("\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ACK":
                assert int(parts[1]) not in self.acked, f"id {parts[1]} was reused"
                self.acked[int(parts[1])] = parts[2]
            elif len(parts) == 2 and parts[0] == "DEL":
                self.deleting.add(int(parts[1]))
            elif len(parts) == 2 and parts[0] == "GONE":
                self.gone.add(int(parts[1]))
        return self


async def _verify(path: str, seen: Log) -> int:
    """Every acked message not being removed is recovered intact; no removed one returns;
    every recovered message is whole."""
    spool = await SegmentSpool.open(path, segment_size=SEGMENT)
    acked, gone = seen.acked, seen.gone
    try:
        found = {m.msg_id: m for m in spool.recover()}
        missing = sorted(set(acked) - seen.deleting - set(found))
        assert not missing, f"acknowledged but lost: {missing[:10]} ({len(missing)})"
        back = sorted(gone & set(found))
        assert not back, f"removed but recovered: {back[:10]}"
        for mid, m in found.items():
            tok = m.envelope.sender.split("@")[0]
            if mid in acked:
                assert tok == acked[mid], (mid, tok, acked[mid])
            assert m.envelope == envelope_for(tok)
            assert await spool.load_body(mid) == body_for(tok), f"body of {mid} damaged"
        return len(found)
    finally:
        await spool.close()


def _kill_run(path: str, run: int, delay: float, seen: Log) -> int:
    """Run a storer, kill it after ``delay``; record what it printed; how many acks."""
    proc = subprocess.Popen(
        [sys.executable, STORER, path, str(run), str(SEGMENT)], stdout=subprocess.PIPE, bufsize=0
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # wait until it is storing
    assert first.startswith(b"ACK"), first
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = len(seen.acked)
    seen.add(first + out)
    return len(seen.acked) - before


def test_kill9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """T02 at spool level: kill -9 a storing, marking and removing process 5 times; after
    each, every acknowledged message is back intact and no removed one is."""
    path = str(tmp_path / "spool")
    rng = random.Random(20261128)
    seen = Log()
    for run in range(5):
        assert _kill_run(path, run, rng.uniform(0.05, 0.5), seen), "nothing acknowledged"
        recovered = asyncio.run(_verify(path, seen))
        assert recovered >= len(set(seen.acked) - seen.deleting)
    segs = sorted(Path(path).glob("seg-*.log"))
    assert int(segs[-1].name[4:12]) > 5, segs  # the runs crossed many segments …
    assert int(segs[0].name[4:12]) > 1, segs  # … and deleted (or compacted) old ones


def test_kill9_twice_reopen_without_clean_close_in_between(tmp_path: Path) -> None:
    path = str(tmp_path / "spool")
    seen = Log()
    for run in range(2):
        _kill_run(path, run, 0.1, seen)
    asyncio.run(_verify(path, seen))


def _run_traced(tmp_path: Path, wrap: list[str]) -> tuple[int, list[str]]:
    spool_dir = tmp_path / "spool"
    log = tmp_path / "strace.log"
    cmd = [
        "strace",
        *strace_check.TRACE_ARGS,
        "-o",
        str(log),
        *wrap,
        sys.executable,
        STORER,
        str(spool_dir),
        "1",
        str(SEGMENT),
        "60",
    ]
    res = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert len(Log().add(res.stdout).acked) == 60
    events = strace_check.parse(log.read_text(errors="replace"))
    return strace_check.check_durable_before_ack(events, str(spool_dir))


@pytest.mark.interop
def test_every_ack_follows_the_fdatasync_of_its_write(tmp_path: Path) -> None:
    """T01 at spool level: each ACK line is written after an fdatasync of the segment."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    acks, problems = _run_traced(tmp_path, [])
    assert acks == 60
    assert problems == []


@pytest.mark.interop
def test_fsync_check_fails_under_eatmydata(tmp_path: Path) -> None:
    """Negative control: with fsync turned into a no-op, the same check must fail."""
    if shutil.which("strace") is None or shutil.which("eatmydata") is None:
        pytest.skip("strace or eatmydata is not installed")
    acks, problems = _run_traced(tmp_path, ["eatmydata"])
    assert acks == 60
    assert len(problems) >= 60, problems[:5]
