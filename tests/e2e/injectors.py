"""Ledger injectors: send numbered messages over SMTP and record acknowledgements.

A message is acknowledged in the ledger only after the injector has *read* a 2xx reply to
the final dot; a cut connection, a timeout or a 4xx leaves it un-acked (and retried when
asked), a 5xx records the refusal and stops. Two clients: ``smtplib`` (a peer nobody here
wrote) and a raw-socket one that also sends malformed data on purpose.

Public names:
    inject(ledger, messages, host, port, *, client="smtplib", concurrency=1, per_connection=1,
           retry=False, max_attempts=5, retry_delay=0.2, timeout=30, source_address=None,
           retry_for=None)
        -> InjectResult                      thread-pooled; never raises for SMTP failures
    RawSmtpClient(host, port, *, timeout, source_address)   line-level client; raises
        SmtpReplyError on an unexpected reply, OSError on a cut connection
    InjectResult, Reply, SmtpReplyError
"""

from __future__ import annotations

import queue
import re
import smtplib
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tests.e2e.ledger import Ledger, TestMessage

__all__ = ["InjectResult", "RawSmtpClient", "Reply", "SmtpReplyError", "inject"]

#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; we allow slack for broken peers.
MAX_REPLY_LINE = 4096
_DOT_LINE = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class SmtpReplyError(Exception):
    """The server answered with a code the caller did not expect."""

    def __init__(self, command: str, reply: Reply) -> None:
        super().__init__(f"{command!r} -> {reply.code} {reply.text}")
        self.command = command
        self.reply = reply


class RawSmtpClient:
    """A deliberately simple SMTP client over a socket: one command, one reply."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        source_address: tuple[str, int] | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout, source_address)
        self._file = self.sock.makefile("rb")
        self.greeting = self.read_reply()

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self.sock.close()

    def __enter__(self) -> RawSmtpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_reply(self) -> Reply:
        lines = []
        while True:
            line = self._file.readline(MAX_REPLY_LINE)
            if not line:
                raise ConnectionResetError("connection closed while waiting for a reply")
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return Reply(int(text[:3]), tuple(lines))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str, expect: int | None = None) -> Reply:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        reply = self.read_reply()
        if expect is not None and reply.code // 100 != expect // 100:
            raise SmtpReplyError(line, reply)
        return reply

    def ehlo(self, name: str = "injector.test") -> Reply:
        return self.command(f"EHLO {name}", 250)

    def send_message(
        self, sender: str, recipients: Sequence[str], data: bytes, *, stuff: bool = True
    ) -> tuple[Reply, list[str]]:
        """MAIL, RCPT×n, DATA, body, dot; returns (reply to the dot, accepted recipients).

        ``data`` is sent as given (dot-stuffed when ``stuff``) followed by ``CRLF.CRLF``; pass
        ``stuff=False`` and your own terminator tricks via ``send_raw`` for malformed cases.
        """
        self.command(f"MAIL FROM:<{sender}>", 250)
        replies = [(r, self.command(f"RCPT TO:<{r}>")) for r in recipients]
        accepted = [r for r, rep in replies if rep.code // 100 == 2]
        if not accepted:
            self.command("RSET")
            worst = min((rep for _, rep in replies), key=lambda rep: rep.code)
            raise SmtpReplyError("RCPT", worst)
        self.command("DATA", 354)
        body = _DOT_LINE.sub(b"..", data) if stuff else data
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.sock.sendall(body + b".\r\n")
        return self.read_reply(), accepted

    def quit(self) -> None:
        try:
            self.command("QUIT")
        except OSError:
            pass


@dataclass(slots=True)
class InjectResult:
    """Counts from one ``inject`` call (per message, after retries)."""

    acked: int = 0
    refused: int = 0  #: 5xx to the dot or to every recipient: final, not retried
    unacked: int = 0  #: no 2xx read after every attempt
    attempts: int = 0
    errors: int = 0  #: attempts that ended in a cut connection, timeout or 4xx

    def add(self, other: InjectResult) -> None:
        self.acked += other.acked
        self.refused += other.refused
        self.unacked += other.unacked
        self.attempts += other.attempts
        self.errors += other.errors


_Outcome = Literal["acked", "refused", "retry"]


class _Session:
    """One connection's worth of sending, with either client; reconnects lazily."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        host: str,
        port: int,
        client: str,
        timeout: float,
        source_address: tuple[str, int] | None,
    ) -> None:
        self.ledger = ledger
        self.host, self.port = host, port
        self.client = client
        self.timeout = timeout
        self.source_address = source_address
        self._smtp: smtplib.SMTP | None = None
        self._raw: RawSmtpClient | None = None
        self.sent_on_connection = 0

    def close(self, *, polite: bool = True) -> None:
        if self._smtp is not None:
            try:
                if polite:
                    self._smtp.quit()
                else:
                    self._smtp.close()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None
        if self._raw is not None:
            if polite:
                self._raw.quit()
            self._raw.close()
            self._raw = None
        self.sent_on_connection = 0

    def send(self, msg: TestMessage) -> _Outcome:
        try:
            if self.client == "raw":
                code, accepted = self._send_raw(msg)
            else:
                code, accepted = self._send_smtplib(msg)
        except (OSError, smtplib.SMTPException, SmtpReplyError) as exc:
            self.close(polite=False)
            failed = _code_of(exc)
            if failed is None:
                return "retry"  # cut or timeout: nothing was read, nothing is recorded
            self.ledger.record_reply(msg.seq, failed)
            return "refused" if failed >= 500 else "retry"
        self.sent_on_connection += 1
        self.ledger.record_reply(msg.seq, code, accepted)
        if 200 <= code < 300:
            return "acked"
        return "refused" if code >= 500 else "retry"

    def _send_smtplib(self, msg: TestMessage) -> tuple[int, list[str]]:
        if self._smtp is None:
            self._smtp = smtplib.SMTP(
                self.host, self.port, timeout=self.timeout, source_address=self.source_address
            )
            self._smtp.ehlo("injector.test")
        # sendmail returns only after reading the reply to the final dot; a non-2xx there
        # raises SMTPDataError, a cut raises SMTPServerDisconnected (then: not acked).
        refused = self._smtp.sendmail(msg.sender, list(msg.recipients), msg.data)
        return 250, [r for r in msg.recipients if r not in refused]

    def _send_raw(self, msg: TestMessage) -> tuple[int, list[str]]:
        if self._raw is None:
            self._raw = RawSmtpClient(
                self.host, self.port, timeout=self.timeout, source_address=self.source_address
            )
            if self._raw.greeting.code != 220:
                raise SmtpReplyError("CONNECT", self._raw.greeting)
            self._raw.ehlo()
        reply, accepted = self._raw.send_message(msg.sender, msg.recipients, msg.data)
        return reply.code, accepted


def _code_of(exc: BaseException) -> int | None:
    if isinstance(exc, SmtpReplyError):
        return exc.reply.code
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        return min(codes) if codes else None
    if isinstance(exc, smtplib.SMTPResponseException):
        return int(exc.smtp_code)
    return None


def inject(
    ledger: Ledger,
    messages: Sequence[TestMessage],
    host: str,
    port: int,
    *,
    client: Literal["smtplib", "raw"] = "smtplib",
    concurrency: int = 1,
    per_connection: int = 1,
    retry: bool = False,
    max_attempts: int = 5,
    retry_delay: float = 0.2,
    timeout: float = 30.0,
    source_address: tuple[str, int] | None = None,
    retry_for: float | None = None,
) -> InjectResult:
    """Send ``messages`` from ``concurrency`` threads, ``per_connection`` per session.

    With ``retry``, an un-acked message (cut, timeout, 4xx) goes back on the queue up to
    ``max_attempts`` times, ``retry_delay`` seconds apart — what T02's injectors do while the
    MTA is being killed and restarted. ``retry_for`` (seconds) replaces the attempt count with
    a time budget: retry without limit until it has passed.
    """
    give_up_at = None if retry_for is None else time.monotonic() + retry_for
    work: queue.Queue[tuple[TestMessage, int]] = queue.Queue()
    for m in messages:
        work.put((m, 1))
    total = InjectResult()
    lock = threading.Lock()
    pending = [len(messages)]

    def worker() -> None:
        mine = InjectResult()
        session = _Session(
            ledger,
            host=host,
            port=port,
            client=client,
            timeout=timeout,
            source_address=source_address,
        )
        try:
            while True:
                with lock:
                    if pending[0] == 0:
                        break
                try:
                    msg, attempt = work.get(timeout=0.05)
                except queue.Empty:
                    continue
                mine.attempts += 1
                outcome = session.send(msg)
                if outcome == "retry":
                    mine.errors += 1
                again = (
                    attempt < max_attempts if give_up_at is None else time.monotonic() < give_up_at
                )
                if outcome == "retry" and retry and again:
                    time.sleep(retry_delay)
                    work.put((msg, attempt + 1))
                    continue
                if outcome == "acked":
                    mine.acked += 1
                elif outcome == "refused":
                    mine.refused += 1
                else:
                    mine.unacked += 1
                with lock:
                    pending[0] -= 1
                if session.sent_on_connection >= per_connection:
                    session.close()
        finally:
            session.close()
            with lock:
                total.add(mine)

    threads = [
        threading.Thread(target=worker, name=f"injector-{i}", daemon=True)
        for i in range(max(1, concurrency))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total
