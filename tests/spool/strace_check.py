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

Works on a trace of several processes (``strace -f`` prints thread ids, not process ids):
descriptor numbers collide between processes, e.g. the daemon's intake workers close
client sockets whose numbers are the spool file's in the queue manager. A descriptor's
mapping to a file therefore has *owners*: the thread that opened it, and threads that
then made a positional write or an fsync on it (calls that only succeed on a file) while
it was the only mapping of that number. Only owners' writes, fsyncs and closes count; a
plain ``write`` or ``close`` from another thread (another process's socket) is ignored. A
thread that cannot be told apart counts for nothing, so the check can fail where it need
not, but never passes where it should fail. strace run as
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


@dataclass(slots=True)
class _Mapping:
    """One descriptor number's file in one process, as far as the trace shows."""

    path: str
    generation: int
    owners: set[int]


class _Descriptors:
    """Descriptor → file, per process as far as thread ids allow (see the module doc)."""

    def __init__(self) -> None:
        self._by_fd: dict[int, list[_Mapping]] = {}

    def opened(self, pid: int, fd: int, path: str, generation: int) -> None:
        live = [m for m in self._by_fd.get(fd, []) if pid not in m.owners]
        self._by_fd[fd] = [*live, _Mapping(path, generation, {pid})]

    def closed(self, pid: int, fd: int) -> None:
        live = [m for m in self._by_fd.get(fd, []) if pid not in m.owners]
        if live:
            self._by_fd[fd] = live
        else:
            self._by_fd.pop(fd, None)

    def used(self, pid: int, fd: int, *, file_only_call: bool) -> _Mapping | None:
        """The mapping ``pid`` used; a successful file-only call on the one mapping of the
        number makes ``pid`` an owner of it."""
        mappings = self._by_fd.get(fd, [])
        for m in mappings:
            if pid in m.owners:
                return m
        if file_only_call and len(mappings) == 1:
            mappings[0].owners.add(pid)
            return mappings[0]
        return None


def check_durable_before_ack(
    events: list[Event],
    spool_dir: str,
    ack_token: Callable[[Event], str | None] = stdout_ack,
    data_tokens: Callable[[str], Iterable[str]] = body_tokens,
) -> tuple[int, list[str]]:
    """(number of acks seen, violations); no violations means every ack followed its fsync."""
    spool_dir = os.path.abspath(spool_dir).rstrip("/")
    # Each open descriptor gets a fresh "generation" so a reused fd number never counts.
    fds = _Descriptors()
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
                fds.opened(ev.pid, ev.result, os.path.normpath(path) if path else path, ev.index)
        elif name == "close" and ev.entry:
            fd = _fd(ev.args)
            if fd is not None:
                fds.closed(ev.pid, fd)
        elif name in ("write", "pwrite64", "pwritev"):
            if ev.entry:
                token = ack_token(ev)
                if token is not None:
                    acks += 1
                    problems.extend(_check_ack(ev, token, first_write, syncs, dir_synced))
                    continue
            if ev.result is None or ev.result < 0:
                continue  # counted once it has completed, and only if it succeeded
            fd = _fd(ev.args)
            opened = (
                fds.used(ev.pid, fd, file_only_call=name != "write") if fd is not None else None
            )
            if opened is not None and in_spool(opened.path):
                for t in data_tokens(ev.args):
                    first_write.setdefault(t, (ev.index, opened.generation))
        elif name in ("fsync", "fdatasync") and ev.result == 0:
            fd = _fd(ev.args)
            opened = fds.used(ev.pid, fd, file_only_call=True) if fd is not None else None
            if opened is not None:
                syncs.setdefault(opened.generation, []).append(ev.index)
                if opened.path == spool_dir:
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
