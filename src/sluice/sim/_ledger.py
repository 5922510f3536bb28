"""The receivers' ledger: what arrived, to count lost, duplicated and phantom messages.

With ``record=True`` a simulator keeps one :class:`LedgerEntry` per message received in
full: its ``Message-ID`` and ``X-Test-Seq`` header values, the SHA-256 of its body (see
:func:`body_sha256`: the same digest as the end-to-end harness's ``body_digest``), its
envelope, and whether the 250 was sent (a hang-up after the final dot
leaves it unacknowledged). :meth:`Ledger.check_messages` and
:meth:`Ledger.check_recipients` compare it with what a test sent.

Public names: Ledger, LedgerEntry, LedgerCheck, MessageRecorder, body_sha256.
Nothing here raises.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Ledger", "LedgerCheck", "LedgerEntry", "MessageRecorder", "body_sha256"]

#: Header bytes kept while looking for the end of the header: RFC 5322 sets no limit; 256 KiB
#: is far beyond any real header block (Postfix's ``header_size_limit`` is 100 KiB).
MAX_HEADER_BYTES = 256 * 1024

_HEADER_RE = re.compile(
    rb"^(message-id|x-test-seq)[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.I | re.M
)


def body_sha256(message: bytes) -> str:
    """The digest the ledger records for ``message``: SHA-256 (hex) of the body (what follows
    the first blank line) with CRLF turned into LF and trailing newlines removed, so that it
    compares with digests taken from Maildir files or smtp-sink dumps."""
    text = message.replace(b"\r\n", b"\n")
    _, sep, body = text.partition(b"\n\n")
    return hashlib.sha256(body.rstrip(b"\n") if sep else b"").hexdigest()


class MessageRecorder:
    """Fed the content of one message in chunks (CRLF line ends, as the engine gives it);
    finds the two headers and digests the body as :func:`body_sha256` does, streaming."""

    __slots__ = ("_cr", "_hash", "_head", "_in_body", "_newlines")

    def __init__(self) -> None:
        self._head = b""
        self._in_body = False
        self._hash = hashlib.sha256()
        self._cr = False
        self._newlines = 0

    def feed(self, data: bytes) -> None:
        if not self._in_body:
            head = self._head + data
            idx = head.find(b"\r\n\r\n")
            if idx < 0:
                if len(head) > MAX_HEADER_BYTES:  # no header end in sight: give up on it
                    self._in_body = True
                    self._head = b""
                else:
                    self._head = head
                return
            self._head, data = head[: idx + 2], head[idx + 4 :]
            self._in_body = True
        self._digest(data)

    def _digest(self, data: bytes) -> None:
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        text = data.replace(b"\r\n", b"\n")
        kept = text.rstrip(b"\n")
        if kept:
            if self._newlines:
                self._hash.update(b"\n" * self._newlines)
            self._hash.update(kept)
            self._newlines = len(text) - len(kept)
        else:
            self._newlines += len(text)

    def finish(self) -> tuple[str | None, str | None, str]:
        """``(message_id, test_seq, body_sha256)``."""
        if self._cr:
            self._cr = False
            self._hash.update(b"\n" * self._newlines + b"\r")
            self._newlines = 0
        message_id = test_seq = None
        for m in _HEADER_RE.finditer(self._head):
            value = re.sub(rb"\r\n[ \t]+", b" ", m[2]).strip().decode("utf-8", "replace")
            if m[1].lower() == b"message-id":
                if message_id is None:
                    message_id = value
            elif test_seq is None:
                test_seq = value
        return message_id, test_seq, self._hash.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One message received in full."""

    at: float
    source_ip: str
    mail_from: str
    recipients: tuple[str, ...]
    message_id: str | None
    test_seq: str | None
    body_sha256: str
    size: int
    #: The 250 was sent (False: the server hung up after the final dot).
    acknowledged: bool

    @property
    def key(self) -> str:
        """``X-Test-Seq`` if present, else ``Message-ID``, else the body hash."""
        return self.test_seq or self.message_id or self.body_sha256


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerCheck:
    """Expected against received (acknowledged copies only; see ``unacknowledged``)."""

    #: Expected but never acknowledged.
    lost: frozenset[str]
    #: Acknowledged more than once: key → copies.
    duplicates: dict[str, int]
    #: Acknowledged but never expected.
    phantoms: frozenset[str]
    #: Received in full but not acknowledged (hang-ups): key → copies.
    unacknowledged: dict[str, int]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicates or self.phantoms)


class Ledger:
    """The entries of one simulator, in arrival order."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    def add(self, entry: LedgerEntry) -> None:
        self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def check_messages(self, expected: Iterable[str]) -> LedgerCheck:
        """Compare message keys (``X-Test-Seq``, else ``Message-ID``) with ``expected``."""
        return _check(
            set(expected),
            ((e.key, e.acknowledged) for e in self.entries),
        )

    def check_recipients(self, expected: Iterable[str]) -> LedgerCheck:
        """Compare ``"KEY recipient"`` pairs (one per recipient of each message) with
        ``expected``."""
        return _check(
            set(expected),
            ((f"{e.key} {r}", e.acknowledged) for e in self.entries for r in e.recipients),
        )


def _check(expected: set[str], got: Iterable[tuple[str, bool]]) -> LedgerCheck:
    acked: Counter[str] = Counter()
    unacked: Counter[str] = Counter()
    for key, ack in got:
        (acked if ack else unacked)[key] += 1
    return LedgerCheck(
        lost=frozenset(expected - acked.keys()),
        duplicates={k: c for k, c in acked.items() if c > 1},
        phantoms=frozenset(acked.keys() - expected),
        unacknowledged=dict(unacked),
    )
