"""Loopback peers for end-to-end tests: free ports, greeting waits, and Postfix's smtp-sink.

Public names:
    free_port(host) -> int                       a TCP port free on ``host`` right now
    free_port_on_all(addrs) -> int               one TCP port free on every address in ``addrs``
    wait_for_greeting(host, port, timeout, proc) -> bytes   first reply line; raises PeerError
    make_world_dir(prefix) -> Path               a 0755 temp dir that dropped-privilege peers
                                                 (Postfix's virtual, smtp-sink -u nobody) can use
    stop_process(proc, timeout)                  SIGTERM, wait, then SIGKILL the process group
    SmtpSink, SinkTransaction                    Postfix's smtp-sink wrapper (see its docstring)
    Tarpit(host, port=)                          accepts and never greets (tarpit.test)
    PeerError                                    a peer failed to start or misbehaved
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.ledger import Delivery, parse_delivery

__all__ = [
    "SMTP_SINK",
    "PeerError",
    "SinkTransaction",
    "SmtpSink",
    "Tarpit",
    "free_port",
    "free_port_on_all",
    "make_world_dir",
    "stop_process",
    "wait_for_greeting",
]

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
#: The unprivileged user smtp-sink switches to when started as root (it insists on one).
SINK_USER = "nobody"
_POLL = 0.02


class PeerError(RuntimeError):
    """A test peer did not start, or stopped answering."""


# -- ports -----------------------------------------------------------------------------------


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_port_on_all(addrs: Iterable[str], attempts: int = 200) -> int:
    """A port that is free on every address of ``addrs`` (all receivers share one port).

    The MX records of the test zones cannot carry ports, so every test receiver listens on
    the same port P on its own 127.0.0.x and Sluice is told ``default-smtp-port P``.
    """
    hosts = list(addrs)
    for _ in range(attempts):
        port = free_port(hosts[0] if hosts else "127.0.0.1")
        if all(_bindable(h, port) for h in hosts):
            return port
    raise PeerError(f"no port free on all of {hosts}")


# -- processes -------------------------------------------------------------------------------


def wait_for_greeting(
    host: str,
    port: int,
    timeout: float = 10.0,
    proc: subprocess.Popen[bytes] | None = None,
    expect: bytes = b"220",
) -> bytes:
    """Connect until ``host:port`` sends its first line starting with ``expect``; return it."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"process exited with {proc.returncode} before greeting on {port}")
        try:
            with socket.create_connection((host, port), timeout=2.0) as s:
                line = s.makefile("rb").readline()
                if line.startswith(expect):
                    with contextlib.suppress(OSError):
                        s.sendall(b"QUIT\r\n")
                    return line
                last = PeerError(f"unexpected greeting {line!r}")
        except OSError as exc:
            last = exc
        time.sleep(_POLL * 5)
    raise PeerError(f"no {expect!r} greeting on {host}:{port} within {timeout}s: {last!r}")


def make_world_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM ``proc`` and wait; SIGKILL its process group if it does not go in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return int(proc.returncode)


# -- smtp-sink -------------------------------------------------------------------------------

#: Written before each dumped transaction (smtp-sink -S); splits the -D file reliably.
_DUMP_MARK = b"X-Sluice-Sink-Begin: 1\n"
_MESG = re.compile(rb"mesg=(\d+)")
#: The envelope records smtp-sink writes before the message (smtp-sink(1), DUMP FILE FORMAT).
_SINK_FIELDS = (
    b"X-Client-Addr:",
    b"X-Client-Proto:",
    b"X-Helo-Args:",
    b"X-Mail-Args:",
    b"X-Rcpt-Args:",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkTransaction:
    """One transaction from smtp-sink's dump: envelope plus the message as received."""

    client: str
    helo: str | None
    sender: str
    mail_args: str
    recipients: tuple[str, ...]
    rcpt_args: tuple[str, ...]
    message: bytes  #: header and body, LF line endings, dot-unstuffed


def _addr_of(args: str) -> tuple[str, str]:
    """``"<a@b> SIZE=1"`` -> ``("a@b", "SIZE=1")``."""
    args = args.strip()
    if args.startswith("<"):
        end = args.find(">")
        if end >= 0:
            return args[1:end], args[end + 1 :].strip()
    addr, _, rest = args.partition(" ")
    return addr, rest


def parse_sink_dump(data: bytes) -> list[SinkTransaction]:
    """Split an smtp-sink ``-S``-marked dump into transactions."""
    out = []
    for chunk in data.split(_DUMP_MARK):
        if not chunk.strip():
            continue
        fields: dict[str, list[str]] = {}
        rest = chunk
        while rest.startswith(_SINK_FIELDS):
            line, _, rest = rest.partition(b"\n")
            key, _, value = line.decode("utf-8", "replace").partition(":")
            fields.setdefault(key, []).append(value.strip())
        if rest.startswith(b"Received:"):  # the three-line Received header smtp-sink adds
            for _ in range(3):
                _, _, rest = rest.partition(b"\n")
        if rest.endswith(b"\n\n"):  # the empty line that ends each dumped message
            rest = rest[:-1]
        sender, mail_args = _addr_of(fields.get("X-Mail-Args", [""])[0])
        rcpts = [_addr_of(a) for a in fields.get("X-Rcpt-Args", [])]
        out.append(
            SinkTransaction(
                client=fields.get("X-Client-Addr", [""])[0],
                helo=fields["X-Helo-Args"][0] if "X-Helo-Args" in fields else None,
                sender=sender,
                mail_args=mail_args,
                recipients=tuple(a for a, _ in rcpts),
                rcpt_args=tuple(p for _, p in rcpts),
                message=rest,
            )
        )
    return out


class SmtpSink:
    """Postfix's ``smtp-sink`` on ``host:port``, optionally dumping every transaction.

    Fault flags map to the tool's options: ``soft_reject`` → ``-r``, ``hard_reject`` → ``-f``,
    ``hangup`` → ``-q`` (close without a reply), ``reply_421`` → ``-Q``; each takes command
    names such as ``CONNECT``, ``RCPT``, ``.``. ``delays`` → ``-W CMD:SECONDS[:ODDS]``.
    ``dump=True`` appends each transaction to one file (``-D``); ``counter=True`` keeps the
    ``-c`` counters on stdout.

    smtp-sink dumps a transaction even when it then refuses or drops the final dot, so
    ``deliveries()`` leaves out transactions whose ``.`` was answered 4xx/5xx/421 (the sender
    was told "not taken"); transactions cut with ``hangup=(".",)`` are kept — the sink holds
    them, which is exactly the ambiguous case of test-plan T28.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.3",
        port: int,
        dump: bool = True,
        counter: bool = True,
        soft_reject: Sequence[str] = (),
        hard_reject: Sequence[str] = (),
        hangup: Sequence[str] = (),
        reply_421: Sequence[str] = (),
        delays: Sequence[str] = (),
        hostname: str | None = None,
        max_connections: int = 256,
        timeout: int = 100,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host, self.port = host, port
        self.dir = workdir / f"sink-{host}-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o1777)  # smtp-sink writes its dump after dropping to nobody
        self.dump_path = self.dir / "dump" if dump else None
        self.out_path = self.dir / "stdout"
        self._dot_refused = any("." in c for c in (*soft_reject, *hard_reject, *reply_421))
        self._greets = not any(
            "CONNECT" in c.upper() for c in (*soft_reject, *hard_reject, *hangup, *reply_421)
        )
        argv = [SMTP_SINK, "-4", "-m", str(max_connections), "-t", str(timeout)]
        if os.geteuid() == 0:
            argv += ["-u", SINK_USER]
        if counter:
            argv.append("-c")
        if self.dump_path is not None:
            argv += ["-S", _DUMP_MARK.decode().replace("\n", "\\n"), "-D", str(self.dump_path)]
        for flag, cmds in (
            ("-r", soft_reject),
            ("-f", hard_reject),
            ("-q", hangup),
            ("-Q", reply_421),
        ):
            if cmds:
                argv += [flag, ",".join(cmds)]
        for d in delays:
            argv += ["-W", d]
        if hostname:
            argv += ["-h", hostname]
        argv += [*extra_args, f"{host}:{port}", "256"]
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._carry = b""
        self._parsed: list[SinkTransaction] = []

    def start(self) -> SmtpSink:
        with self.out_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self._greets:
            wait_for_greeting(self.host, self.port, 10.0, self.proc)
        else:
            self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PeerError(f"smtp-sink exited: {self.output()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            time.sleep(_POLL)
        raise PeerError(f"smtp-sink not listening on {self.host}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5.0)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.out_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def message_count(self) -> int:
        """Messages completed so far, from the ``-c`` counter (0 before the first)."""
        found = _MESG.findall(self.out_path.read_bytes()) if self.out_path.exists() else []
        return max((int(x) for x in found), default=0)

    def transactions(self) -> list[SinkTransaction]:
        """Every dumped transaction, including ones whose final dot the sink refused."""
        if self.dump_path is None or not self.dump_path.exists():
            return []
        # Incremental: big dumps (T02 writes gigabytes) are read once. smtp-sink writes each
        # transaction in one piece when it ends, so a tail ending in the empty line is whole.
        with self.dump_path.open("rb") as f:
            f.seek(self._offset)
            data = self._carry + f.read()
        self._offset += len(data) - len(self._carry)
        cut = data.rfind(_DUMP_MARK)
        if data.endswith(b"\n\n"):
            cut = len(data)
        if cut > 0:
            self._parsed.extend(parse_sink_dump(data[:cut]))
            data = data[cut:]
        self._carry = data
        return list(self._parsed)

    def deliveries(self) -> list[Delivery]:
        if self._dot_refused:
            return []
        src = f"sink:{self.host}:{self.port}"
        out: list[Delivery] = []
        for t in self.transactions():
            out.extend(parse_delivery(t.message, t.recipients, src))
        return out

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            n = len(self.transactions()) if self.dump_path is not None else self.message_count()
            if n >= count or time.monotonic() > deadline:
                return n
            time.sleep(_POLL * 5)


class Tarpit:
    """A listener on ``host:port`` that accepts connections and never greets (tarpit.test).

    Accepted sockets are held open until ``stop()``; ``accepted`` counts them.
    """

    def __init__(self, host: str = "127.0.0.8", *, port: int) -> None:
        self.host, self.port = host, port
        self.accepted = 0
        self._sock: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> Tarpit:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.settimeout(_POLL * 5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="tarpit", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for s in [*self._held, *([self._sock] if self._sock else [])]:
            s.close()

    def __enter__(self) -> Tarpit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
