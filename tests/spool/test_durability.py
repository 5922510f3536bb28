"""Durability at spool level: kill -9 under load (T02), fsync before ack (T01), torn WAL (D2).

The strace tests are marked ``interop``: they run strace and eatmydata (Debian packages).
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

from sluice.spool import SqliteSpool

HERE = Path(__file__).resolve().parent
STORER = str(HERE / "_storer.py")


def _acks(out: bytes) -> dict[int, str]:
    acked: dict[int, str] = {}
    for line in out.decode().split("\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ACK":
            acked[int(parts[1])] = parts[2]
    return acked


async def _verify(path: str, acked: dict[int, str]) -> int:
    """Every acked message is recovered intact; every recovered message is whole."""
    spool = await SqliteSpool.open(path)
    try:
        found = {m.msg_id: m for m in spool.recover()}
        missing = sorted(set(acked) - set(found))
        assert not missing, f"acknowledged but lost: {missing[:10]} ({len(missing)})"
        for mid, m in found.items():
            tok = m.envelope.sender.split("@")[0]
            if mid in acked:
                assert tok == acked[mid], (mid, tok, acked[mid])
            assert m.envelope == envelope_for(tok)
            assert await spool.load_body(mid) == body_for(tok), f"body of {mid} damaged"
        return len(found)
    finally:
        await spool.close()


def test_kill9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """T02 at spool level: kill -9 a storing process 5 times; reopen; all acks are there."""
    path = str(tmp_path / "spool")
    rng = random.Random(20260521)
    acked: dict[int, str] = {}
    for run in range(5):
        proc = subprocess.Popen(
            [sys.executable, STORER, path, str(run)], stdout=subprocess.PIPE, bufsize=0
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # wait until it is storing
        assert first.startswith(b"ACK"), first
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        new = _acks(first + out)
        assert new, "the child acknowledged nothing"
        assert not set(new) & set(acked), "an id was reused"
        acked.update(new)
        recovered = asyncio.run(_verify(path, acked))
        assert recovered >= len(acked)


def test_kill9_twice_reopen_without_clean_close_in_between(tmp_path: Path) -> None:
    """The child is killed, restarted on the same spool (no clean close ever), killed again."""
    path = str(tmp_path / "spool")
    acked: dict[int, str] = {}
    for run in range(2):
        proc = subprocess.Popen(
            [sys.executable, STORER, path, str(run)], stdout=subprocess.PIPE, bufsize=0
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        time.sleep(0.1)
        proc.kill()
        out, _ = proc.communicate()
        acked.update(_acks(first + out))
    asyncio.run(_verify(path, acked))


def test_torn_wal_tail_never_yields_a_partial_message(tmp_path: Path) -> None:
    """D2: cut or damage the WAL anywhere; recovery gives whole messages only, never an error."""
    src = tmp_path / "src"

    async def fill() -> dict[int, str]:
        spool = await SqliteSpool.open(str(src))
        acked: dict[int, str] = {}
        for batch in range(8):
            toks = [f"TOKEN-{batch:03d}{i:07d}-END" for i in range(15)]
            ids = await asyncio.gather(*(spool.store(envelope_for(t), body_for(t)) for t in toks))
            acked.update(zip(ids, toks, strict=True))
        await spool.abandon()  # no checkpoint: everything is still in the WAL
        return acked

    acked = asyncio.run(fill())
    wal = (src / "spool.db-wal").read_bytes()
    assert len(wal) > 10_000
    rng = random.Random(7)
    cuts = [0, 32, len(wal) // 3, len(wal) // 2 + 5, len(wal) - 1, len(wal)]
    cuts += [rng.randrange(len(wal)) for _ in range(4)]
    counts = []
    for n, cut in enumerate(cuts):
        dst = tmp_path / f"copy{n}"
        dst.mkdir()
        shutil.copy(src / "spool.db", dst / "spool.db")
        data = bytearray(wal[:cut])
        if n % 2 and cut > 1000:  # also flip a byte inside the kept part
            data[rng.randrange(1000, cut)] ^= 0x55
        (dst / "spool.db-wal").write_bytes(bytes(data))
        counts.append(asyncio.run(_verify(str(dst), {})))
    assert counts[-1] == len(acked), "the untouched WAL must recover everything"
    assert counts[0] < len(acked)


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
        "60",
    ]
    res = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert len(_acks(res.stdout)) == 60
    events = strace_check.parse(log.read_text(errors="replace"))
    return strace_check.check_durable_before_ack(events, str(spool_dir))


@pytest.mark.interop
def test_every_ack_follows_the_fsync_of_its_write(tmp_path: Path) -> None:
    """T01 at spool level: each ACK line is written after an fsync of the WAL holding it."""
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
