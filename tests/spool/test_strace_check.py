"""The strace parser and the ack-after-fsync rule, on hand-written traces."""

from __future__ import annotations

import strace_check

GOOD = """\
100 openat(AT_FDCWD, "/sp", O_RDONLY|O_DIRECTORY) = 5
100 fsync(5) = 0
100 close(5) = 0
101 openat(AT_FDCWD, "/sp/spool.db-wal", O_RDWR|O_CREAT, 0644) = 7
101 pwrite64(7, "..TOKEN-1-END..", 4096, 0) = 4096
101 fdatasync(7 <unfinished ...>
100 write(1, "ACK 1 TOKEN-0-END\\n", 18) = 18
101 <... fdatasync resumed>) = 0
100 write(1, "ACK 2 TOKEN-1-END\\n", 18) = 18
+++ exited with 0 +++
"""


def test_parse_pairs_unfinished_and_resumed() -> None:
    events = strace_check.parse(GOOD)
    names = [(e.name, e.entry, e.result) for e in events]
    assert ("fdatasync", True, None) in names
    assert ("fdatasync", False, 0) in names
    resumed = next(e for e in events if e.name == "fdatasync" and not e.entry)
    assert resumed.args == "7"


def test_ack_after_completed_fsync_passes() -> None:
    events = strace_check.parse(GOOD.replace("ACK 1 TOKEN-0-END", "other"))
    acks, problems = strace_check.check_durable_before_ack(events, "/sp")
    assert (acks, problems) == (1, [])


def test_ack_while_fsync_is_still_running_fails() -> None:
    trace = GOOD.replace("ACK 1 TOKEN-0-END", "ACK 1 TOKEN-1-END")
    acks, problems = strace_check.check_durable_before_ack(strace_check.parse(trace), "/sp")
    assert acks == 2
    assert len(problems) == 1
    assert "without an fsync" in problems[0]


def test_ack_without_directory_fsync_or_write_fails() -> None:
    trace = GOOD.replace("100 fsync(5) = 0\n", "")
    _, problems = strace_check.check_durable_before_ack(strace_check.parse(trace), "/sp")
    assert any("directory" in p for p in problems)
    _, problems = strace_check.check_durable_before_ack(strace_check.parse(GOOD), "/sp")
    assert any("never written" in p for p in problems)  # TOKEN-0 was never in the spool


def test_fsync_of_a_reused_descriptor_does_not_count() -> None:
    trace = """\
1 openat(AT_FDCWD, "/sp", O_RDONLY) = 5
1 fsync(5) = 0
1 openat(AT_FDCWD, "/sp/spool.db-wal", O_RDWR) = 7
1 pwrite64(7, "TOKEN-1-END", 11, 0) = 11
1 close(7) = 0
1 openat(AT_FDCWD, "/elsewhere", O_RDWR) = 7
1 fsync(7) = 0
1 write(1, "ACK 1 TOKEN-1-END\\n", 18) = 18
"""
    _, problems = strace_check.check_durable_before_ack(strace_check.parse(trace), "/sp")
    assert len(problems) == 1


def test_another_process_closing_the_same_fd_number_does_not_hide_the_write() -> None:
    """The queue manager's writer (11, 12) and an intake worker (20) share fd number 7:
    the worker's socket. Its close and its writes there say nothing about the spool file."""
    trace = """\
10 openat(AT_FDCWD, "/sp", O_RDONLY) = 5
10 fsync(5) = 0
10 openat(AT_FDCWD, "/sp/spool.db-wal", O_RDWR) = 7
11 pwrite64(7, "TOKEN-1-END", 11, 0) = 11
11 fdatasync(7) = 0
20 write(7, "ACK 1 TOKEN-1-END\\n", 18) = 18
20 close(7) = 0
11 pwrite64(7, "TOKEN-2-END", 11, 0 <unfinished ...>
20 write(7, "TOKEN-3-END", 11) = 11
11 <... pwrite64 resumed>) = 11
12 fdatasync(7) = 0
20 write(1, "ACK 2 TOKEN-2-END\\n", 18) = 18
20 write(1, "ACK 3 TOKEN-3-END\\n", 18) = 18
"""
    ack = strace_check.stdout_ack

    def ack_any_fd(ev: strace_check.Event) -> str | None:
        if ev.name == "write" and ev.entry and "ACK " in ev.args:
            m = strace_check.ACK_TOKEN.search(ev.args)
            return m.group(0) if m else None
        return ack(ev)

    acks, problems = strace_check.check_durable_before_ack(
        strace_check.parse(trace), "/sp", ack_any_fd
    )
    assert acks == 3
    # TOKEN-3 only went to the worker's socket: never written to the spool.
    assert problems == ["TOKEN-3-END: acknowledged but never written to the spool"]


def test_a_write_still_running_does_not_count() -> None:
    trace = """\
1 openat(AT_FDCWD, "/sp", O_RDONLY) = 5
1 fsync(5) = 0
1 openat(AT_FDCWD, "/sp/spool.db-wal", O_RDWR) = 7
2 pwrite64(7, "TOKEN-1-END", 11, 0 <unfinished ...>
1 fdatasync(7) = 0
1 write(1, "ACK 1 TOKEN-1-END\\n", 18) = 18
2 <... pwrite64 resumed>) = 11
"""
    _, problems = strace_check.check_durable_before_ack(strace_check.parse(trace), "/sp")
    assert len(problems) == 1
