"""Parse ``strace -f`` output and check that every acknowledgement follows a durable write.

Reusable by the intake tests (T01): give it the parsed events, the spool directory, a
function that says which event is an acknowledgement (and of what token), and a function
that finds tokens in written data. A token is something that appears both in the data
written to the spool (e.g. a marker in the message body) and in the acknowledgement (the
line printed after ``store()`` returned, or the ``250`` reply of that message).

Rules checked for each acknowledgement of token T (test plan D1):
  1. some write to a file under the spool directory contained T, before the ack;
  2. an fsync/fdatasync of that same file *completed* after that write and before the ack;
  3. the spool directory itself was fsync'd before the first ack (names durable).

Assumes one traced process (threads share the descriptor table); strace run as
``strace -f -qq -s 70000 -e trace=openat,close,write,pwrite64,fsync,fdatasync,rename -o LOG``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TRACE_ARGS = (
    "-f",
    "-qq",
    "-s",
    "70000",
    "-e",
    "trace=openat,close,write,pwrite64,pwritev,fsync,fdatasync,rename,renameat2",
)

_PREFIX = re.compile(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?")
_FULL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(?:\s.*)?$", re.S)
_UNFINISHED = re.compile(r"^(\w+)\((.*?)\s*<unfinished \.\.\.>$", re.S)
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(-?\d+|\?)(?:\s.*)?$", re.S)
_FIRST_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Event:
    """One system call entry or completion, in trace order."""

    index: int
    pid: int
    name: str
    #: The argument text as strace printed it at entry.
    args: str
    #: The return value at completion, or None for an entry-only event.
    result: int | None
    #: True when this event marks the call's entry (args valid), False for a completion only.
    entry: bool


def parse(text: str) -> list[Event]:
    """Events from strace output; an unfinished/resumed pair gives an entry then an exit."""
    events: list[Event] = []
    open_calls: dict[int, tuple[str, str]] = {}
    for raw in text.splitlines():
        m = _PREFIX.match(raw)
        pid = int((m.group(1) or m.group(2) or 0) if m else 0)
        line = raw[m.end() :] if m else raw
        if line.startswith(("+++", "---")):
            continue
        idx = len(events)
        if (u := _UNFINISHED.match(line)) is not None:
            open_calls[pid] = (u.group(1), u.group(2))
            events.append(Event(idx, pid, u.group(1), u.group(2), None, True))
        elif (r := _RESUMED.match(line)) is not None:
            name, args = open_calls.pop(pid, (r.group(1), ""))
            events.append(Event(idx, pid, name, args, _ret(r.group(3)), False))
        elif (f := _FULL.match(line)) is not None:
            events.append(Event(idx, pid, f.group(1), f.group(2), _ret(f.group(3)), True))
    return events


def _ret(s: str) -> int | None:
    return None if s == "?" else int(s)


def _fd(args: str) -> int | None:
    head = args.split(",", 1)[0].strip()
    return int(head) if head.lstrip("-").isdigit() else None


def _path(args: str) -> str | None:
    m = _FIRST_STRING.search(args)
    return m.group(1) if m else None


ACK_TOKEN = re.compile(r"TOKEN-\d+-END")


def stdout_ack(event: Event) -> str | None:
    """The token of an ``ACK TOKEN-n-END`` line written to stdout, else None."""
    if event.name == "write" and event.entry and _fd(event.args) == 1 and "ACK " in event.args:
        m = ACK_TOKEN.search(event.args)
        return m.group(0) if m else None
    return None


def body_tokens(data: str) -> Iterable[str]:
    """Tokens ``TOKEN-n-END`` inside written data."""
    return ACK_TOKEN.findall(data)


def check_durable_before_ack(
    events: list[Event],
    spool_dir: str,
    ack_token: Callable[[Event], str | None] = stdout_ack,
    data_tokens: Callable[[str], Iterable[str]] = body_tokens,
) -> tuple[int, list[str]]:
    """(number of acks seen, violations); no violations means every ack followed its fsync."""
    spool_dir = os.path.abspath(spool_dir).rstrip("/")
    # Each open descriptor gets a fresh "generation" so a reused fd number never counts.
    fds: dict[int, tuple[str, int]] = {}
    pending_open: dict[int, str] = {}
    first_write: dict[str, tuple[int, int]] = {}  # token -> (event index, generation)
    syncs: dict[int, list[int]] = {}  # generation -> completion indexes
    dir_synced = False
    acks = 0
    problems: list[str] = []

    def in_spool(path: str | None) -> bool:
        return path is not None and (path == spool_dir or path.startswith(spool_dir + "/"))

    for ev in events:
        name = ev.name
        if name == "openat":
            if ev.entry:
                pending_open[ev.pid] = _path(ev.args) or ""
            if ev.result is not None and ev.result >= 0:
                path = pending_open.pop(ev.pid, _path(ev.args) or "")
                fds[ev.result] = (os.path.normpath(path) if path else path, ev.index)
        elif name == "close" and ev.entry:
            fd = _fd(ev.args)
            if fd is not None:
                fds.pop(fd, None)
        elif name in ("write", "pwrite64", "pwritev") and ev.entry:
            token = ack_token(ev)
            if token is not None:
                acks += 1
                problems.extend(_check_ack(ev, token, first_write, syncs, dir_synced))
                continue
            fd = _fd(ev.args)
            opened = fds.get(fd) if fd is not None else None
            if opened is not None and in_spool(opened[0]):
                for t in data_tokens(ev.args):
                    first_write.setdefault(t, (ev.index, opened[1]))
        elif name in ("fsync", "fdatasync") and ev.result == 0:
            fd = _fd(ev.args)
            opened = fds.get(fd) if fd is not None else None
            if opened is not None:
                syncs.setdefault(opened[1], []).append(ev.index)
                if opened[0] == spool_dir:
                    dir_synced = True
    return acks, problems


def _check_ack(
    ev: Event,
    token: str,
    first_write: dict[str, tuple[int, int]],
    syncs: dict[int, list[int]],
    dir_synced: bool,
) -> list[str]:
    out: list[str] = []
    if not dir_synced:
        out.append(f"{token}: acknowledged before the spool directory was fsync'd")
    wrote = first_write.get(token)
    if wrote is None:
        out.append(f"{token}: acknowledged but never written to the spool")
        return out
    w_idx, gen = wrote
    if not any(w_idx < s < ev.index for s in syncs.get(gen, ())):
        out.append(f"{token}: acknowledged without an fsync of its spool file after its write")
    return out
