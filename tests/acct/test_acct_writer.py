"""The accounting file writer: batching, rotation on a fake clock, pipes to a real command."""

from __future__ import annotations

import csv
import io
import os
import signal
import time
from datetime import UTC
from pathlib import Path

import pytest

from sluice.acct import AcctLayout, AcctRecord, RecordType
from sluice.acct.writer import (
    AcctError,
    AcctFile,
    AcctFileSettings,
    AcctLog,
    AcctPipe,
    open_acct_target,
    rotated_name,
)
from sluice.clock import FakeClock

HEADER = DEFAULT_HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,"
    "srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,"
    "envId,queue,vmtaPool\n"
)
START = 1_800_000_000.0  # FakeClock's default wall time: 2027-01-15 08:00:00 UTC


def record(
    n: int, kind: RecordType = RecordType.DELIVERY, clock: FakeClock | None = None
) -> AcctRecord:
    return AcctRecord(
        type=kind,
        time_logged=clock.wall() if clock else START,
        time_queued=START,
        orig="bounces@sender.test",
        rcpt=f"user{n}@ok.test",
        dsn_status="2.0.0" if kind is RecordType.DELIVERY else "5.1.1",
        dsn_diag=f"smtp;250 2.0.0 ok, id {n}",
        vmta="transactional",
        queue="ok.test/transactional",
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def settings(target: Path | str, **kw: object) -> AcctFileSettings:
    return AcctFileSettings(target=str(target), tz=UTC, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_file_has_the_powermta_header_and_parses_with_csv(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    acct = AcctFile(settings(path), clock)
    assert path.read_text() == HEADER  # header at once, before any row
    for n in range(3):
        acct.write(record(n))
    assert path.read_text() == HEADER  # buffered: nothing written per record
    acct.flush()
    got = rows(path)
    assert [r["rcpt"] for r in got] == ["user0@ok.test", "user1@ok.test", "user2@ok.test"]
    assert got[0]["timeQueued"] == "2027-01-15 08:00:00+0000"
    assert got[0]["dsnDiag"] == "smtp;250 2.0.0 ok, id 0"
    acct.close()


def test_records_not_selected_are_not_written(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    acct = AcctFile(settings(path), clock)  # default: d and b
    acct.write(record(1, RecordType.TRANSIENT))
    acct.write(record(2, RecordType.BOUNCE))
    acct.close()
    assert [r["type"] for r in rows(path)] == ["b"]


def test_big_buffers_flush_by_themselves(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    acct = AcctFile(settings(path, max_buffer=1000), clock)
    for n in range(20):
        acct.write(record(n))
    assert len(rows(path)) >= 10
    acct.close()
    assert len(rows(path)) == 20


def test_restart_appends_to_a_file_with_the_same_header(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    for n in range(2):
        acct = AcctFile(settings(path), clock)
        acct.write(record(n))
        acct.close()
    assert path.read_text().count("type,timeLogged") == 1
    assert len(rows(path)) == 2
    assert list(tmp_path.iterdir()) == [path]


def test_a_file_with_another_header_is_rotated_away_first(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    path.write_text("type,rcpt\nd,old@x.test\n")
    acct = AcctFile(settings(path), clock)
    acct.close()
    old = tmp_path / "acct-2027-01-15-080000.csv"
    assert old.read_text() == "type,rcpt\nd,old@x.test\n"
    assert path.read_text() == HEADER


def test_rotation_by_size(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    acct = AcctFile(settings(path, max_size=len(HEADER) + 400), clock)
    total = 0
    for batch in range(6):
        for n in range(2):
            acct.write(record(batch * 10 + n))
            total += 1
        acct.flush()
        clock.advance(1)
    acct.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 2
    seen: list[str] = []
    for f in files:
        text = f.read_text()
        assert text.startswith(HEADER)  # every file starts with the header
        assert len(text) <= len(HEADER) + 400
        seen.extend(r["rcpt"] for r in rows(f))
    assert sorted(seen) == sorted(f"user{b * 10 + n}@ok.test" for b in range(6) for n in range(2))
    assert len(seen) == total


def test_rotation_by_time_on_interval_boundaries(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    clock.advance(90)  # 08:01:30; the 5-minute boundaries are 08:05, 08:10, ...
    acct = AcctFile(settings(path, move_interval=300), clock)
    acct.write(record(1, clock=clock))
    acct.flush()
    clock.advance(200)  # 08:04:50: not yet
    acct.tick()
    assert len(list(tmp_path.iterdir())) == 1
    clock.advance(10)  # 08:05:00
    acct.tick()
    first = tmp_path / "acct-2027-01-15-080130.csv"
    assert [r["rcpt"] for r in rows(first)] == ["user1@ok.test"]
    assert path.read_text() == HEADER
    clock.advance(600)  # a header-only file is not rotated
    acct.tick()
    assert len(list(tmp_path.iterdir())) == 2
    acct.write(record(2, clock=clock))
    clock.advance(1)
    acct.tick()  # 08:15:01: the empty file starts a new interval with this row
    assert [r["rcpt"] for r in rows(path)] == ["user2@ok.test"]
    clock.advance(299)  # 08:20:00
    acct.tick()
    acct.close()
    assert path.read_text() == HEADER
    second = tmp_path / "acct-2027-01-15-081501.csv"
    assert [r["rcpt"] for r in rows(second)] == ["user2@ok.test"]


def test_move_to_and_delete_after(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "live" / "acct.csv"
    archive = tmp_path / "archive"
    stale = archive / "acct-2026-12-01-000000.csv"
    archive.mkdir()
    stale.write_text(HEADER)
    unrelated = archive / "other-2026-12-01-000000.csv"
    unrelated.write_text("keep me")
    acct = AcctFile(
        settings(path, move_interval=3600, move_to=str(archive), delete_after=2 * 86400), clock
    )
    assert not stale.exists()  # purged at start-up: older than 2 days
    assert unrelated.exists()
    for day in range(3):
        acct.write(record(day, clock=clock))
        acct.tick()
        clock.advance(86400)
        acct.tick()
    acct.close()
    names = sorted(p.name for p in archive.iterdir())
    # Day 0's file (started 2027-01-15 08:00) is more than 2 days old when day 2 rotates.
    assert names == [
        "acct-2027-01-16-080000.csv",
        "acct-2027-01-17-080000.csv",
        "other-2026-12-01-000000.csv",
    ]
    assert [p.name for p in path.parent.iterdir()] == ["acct.csv"]


def test_rotated_name_clashes_get_a_counter(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    acct = AcctFile(settings(path), clock)
    for n in range(3):
        acct.write(record(n))
        acct.rotate()  # same second each time
    acct.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acct-2027-01-15-080000-1.csv",
        "acct-2027-01-15-080000-2.csv",
        "acct-2027-01-15-080000.csv",
        "acct.csv",
    ]
    assert rotated_name(Path("/x/acct"), START, UTC) == "acct-2027-01-15-080000"


def test_world_readable(tmp_path: Path, clock: FakeClock) -> None:
    old = os.umask(0o022)
    try:
        AcctFile(settings(tmp_path / "a.csv", world_readable=True), clock).close()
        AcctFile(settings(tmp_path / "b.csv"), clock).close()
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o640


def test_unwritable_target_is_an_acct_error(tmp_path: Path, clock: FakeClock) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AcctError):
        AcctFile(settings(blocker / "acct.csv"), clock)


# --- pipes ------------------------------------------------------------------------------------


@pytest.fixture
def pipe_out(tmp_path: Path) -> Path:
    return tmp_path / "piped.csv"


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_pipe_feeds_a_command(pipe_out: Path, clock: FakeClock) -> None:
    acct = open_acct_target(settings(f"|cat > {pipe_out}"), clock)
    assert isinstance(acct, AcctPipe)
    for n in range(100):
        acct.write(record(n))
    acct.flush()
    acct.close()
    got = rows(pipe_out)
    assert pipe_out.read_text().startswith(HEADER)
    assert [r["rcpt"] for r in got] == [f"user{n}@ok.test" for n in range(100)]
    assert acct.starts == 1


def test_pipe_command_is_restarted_when_it_dies(tmp_path: Path, clock: FakeClock) -> None:
    out = tmp_path / "piped.csv"
    acct = AcctPipe(settings(f"|cat >> {out}"), clock)
    acct.write(record(1))
    acct.flush()
    wait_for(lambda: out.exists() and "user1@" in out.read_text())
    pid = acct.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.05)
    acct.write(record(2))
    acct.flush()  # the command is dead; the restart waits PIPE_RESTART_DELAY
    clock.advance(1.5)
    acct.write(record(3))
    acct.flush()
    acct.close()
    assert acct.starts == 2
    text = out.read_text()
    assert text.count("type,timeLogged") == 2  # each process's stream starts with a header
    got = [line for line in csv.reader(io.StringIO(text)) if line[0] != "type"]
    assert [line[4] for line in got] == ["user1@ok.test", "user2@ok.test", "user3@ok.test"]


def test_close_restarts_a_dead_command_to_hand_over_the_rest(
    tmp_path: Path, clock: FakeClock
) -> None:
    out = tmp_path / "piped.csv"
    acct = AcctPipe(settings(f"|cat >> {out}"), clock)
    pid = acct.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: acct._proc is not None and acct._proc.poll() is not None)
    acct.write(record(7))
    acct.close()  # no time has passed: the restart delay does not hold back the last rows
    assert [r["rcpt"] for r in rows(out)] == ["user7@ok.test"]


def test_rows_a_dead_command_never_read_are_resent(tmp_path: Path, clock: FakeClock) -> None:
    out = tmp_path / "piped.csv"
    ready = tmp_path / "ready"
    # The first run never reads its stdin: everything sits in the pipe when it is killed.
    cmd = f"if [ -e {ready} ]; then cat > {out}; else touch {ready}; exec sleep 60; fi"
    acct = AcctPipe(settings(f"|{cmd}"), clock)
    wait_for(ready.exists)
    for n in range(50):
        acct.write(record(n))
    acct.flush()
    pid = acct.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: acct._proc is not None and acct._proc.poll() is not None)
    clock.advance(2)
    acct.flush()
    acct.close()
    assert [r["rcpt"] for r in rows(out)] == [f"user{n}@ok.test" for n in range(50)]


def test_empty_pipe_command_is_an_error(clock: FakeClock) -> None:
    with pytest.raises(AcctError):
        AcctPipe(settings("|  "), clock)


# --- fan-out ----------------------------------------------------------------------------------


def test_acct_log_sends_each_record_type_where_it_is_wanted(
    tmp_path: Path, clock: FakeClock
) -> None:
    all_path, t_path = tmp_path / "acct.csv", tmp_path / "transient.csv"
    log = AcctLog.open(
        [
            settings(all_path),
            settings(t_path, layout=AcctLayout.build("t", {"t": "timeLogged,rcpt,dsnStatus"})),
        ],
        clock,
    )
    log.record(record(1))
    log.record(record(2, RecordType.TRANSIENT))
    log.record(record(3, RecordType.BOUNCE))
    log.flush()
    log.tick()
    log.close()
    assert [r["rcpt"] for r in rows(all_path)] == ["user1@ok.test", "user3@ok.test"]
    assert t_path.read_text().splitlines() == [
        "type,timeLogged,rcpt,dsnStatus",
        "t,2027-01-15 08:00:00+0000,user2@ok.test,5.1.1 (bad destination mailbox address)",
    ]


def test_a_failed_rotation_keeps_the_file_usable(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "acct.csv"
    not_a_dir = tmp_path / "blocker"
    not_a_dir.write_text("")
    acct = AcctFile(settings(path, move_to=str(not_a_dir / "archive")), clock)
    acct.write(record(1))
    with pytest.raises(AcctError, match="cannot move"):
        acct.rotate()
    acct.write(record(2))
    acct.close()
    assert [r["rcpt"] for r in rows(path)] == ["user1@ok.test", "user2@ok.test"]
