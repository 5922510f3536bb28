"""Shared pieces of the delivery end-to-end tests: accounting files, DSNs, waits, wire counters.

Public names:
    EXTRA_ADDRS, SRC_DOMAIN, ACCT_HEADER
    add_zone(server, domain, addr, *, pref=10)        MX → mx.DOMAIN A addr, in a running server
    add_mx_zone(server, domain, hosts)                several MX hosts: [(pref, name, addr), …]
    AcctFile, read_acct(path) -> AcctFile              csv-parsed accounting file
    DsnReport, parse_dsn(raw) -> DsnReport | None      an RFC 3464 report, or None if not one
    dsns_at(receiver) -> list[DsnReport]               every DSN in a PostfixReceiver's Maildir
    return_path(raw) -> str | None                     the Return-Path Postfix recorded
    wait_for(predicate, timeout, what) -> value        poll until truthy; AssertionError otherwise
    wait_for_len(fetch, n, timeout, what) -> list      poll until fetch() has >= n items
    SynCounter                                          SYNs seen on lo (AF_PACKET + BPF filter)
    ConnSampler                                        concurrent connections to an address
    waves(times, gap) -> list[list[float]]             cluster event times separated by gaps
    percentile(values, p) -> float
    World                                              one test's harness: DNS, ledger, peers,
                                                       Sluice (the ``world`` fixture)
Nothing here raises except wait_for/wait_for_len and read_acct (AssertionError: timed out, or
a row whose field count differs from the header) and SynCounter.start (PermissionError without
CAP_NET_RAW).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import email
import email.message
import email.policy
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.dnszones import DnsTestServer
from tests.e2e.injectors import InjectResult, inject
from tests.e2e.ledger import Ledger, TestMessage
from tests.e2e.peers import SmtpSink
from tests.e2e.postfix_peer import PostfixReceiver
from tests.e2e.sluice_proc import SluiceProcess

from sluice.acct.records import DEFAULT_FIELDS
from sluice.routing import FakeName

__all__ = [
    "ACCT_HEADER",
    "EXTRA_ADDRS",
    "SRC_DOMAIN",
    "AcctFile",
    "ConnSampler",
    "DsnReport",
    "SynCounter",
    "World",
    "add_mx_zone",
    "add_zone",
    "dsns_at",
    "parse_dsn",
    "percentile",
    "read_acct",
    "return_path",
    "wait_for",
    "wait_for_len",
    "waves",
]

#: Loopback addresses beyond tests/e2e's receivers; they share the e2e port.
EXTRA_ADDRS: dict[str, str] = {
    "src": "127.0.0.11",  # Postfix for src.test: the ledger's sender domain, DSNs land here
    "mx2": "127.0.0.12",  # a secondary MX
    "decoy": "127.0.0.14",  # an address nobody should ever connect to (null MX's A record)
}
#: The ledger's default sender is ledger@src.test.
SRC_DOMAIN = "src.test"
#: PowerMTA's default accounting header (docs/accounting.md).
ACCT_HEADER = ",".join(DEFAULT_FIELDS)

T = TypeVar("T")


# -- the world of one test ------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class World:
    """The harness of one test, built by the ``world`` fixture from tests/e2e's fixtures."""

    dir: Path
    port: int  #: the port every receiver (and, for loop.test, Sluice) listens on
    dns: DnsTestServer
    ledger: Ledger
    listener: tuple[str, int]  #: Sluice's smtp-listener
    write_config: Callable[..., Path]  #: tests/e2e's sluice_config fixture
    make_sluice: Callable[..., SluiceProcess]
    make_sink: Callable[..., SmtpSink]  #: make(host, **SmtpSink kwargs)
    make_postfix: Callable[..., PostfixReceiver]  #: make(**PostfixReceiver kwargs)

    @property
    def acct_path(self) -> Path:
        return self.dir / "acct.csv"

    def start_sluice(self, **config: Any) -> SluiceProcess:
        """Write a config (accounting to ``acct_path``) and start the daemon on it."""
        config.setdefault("acct_file", self.acct_path)
        config.setdefault("listener", self.listener)
        return self.make_sluice(self.write_config(**config), listener=config["listener"])

    def acct(self) -> AcctFile:
        return read_acct(self.acct_path)

    def inject(self, messages: Sequence[TestMessage], **kwargs: Any) -> InjectResult:
        return inject(self.ledger, messages, *self.listener, **kwargs)


# -- DNS zones -----------------------------------------------------------------------------


def add_zone(server: DnsTestServer, domain: str, addr: str, *, pref: int = 10) -> None:
    add_mx_zone(server, domain, [(pref, f"mx.{domain}", addr)])


def add_mx_zone(server: DnsTestServer, domain: str, hosts: Sequence[tuple[int, str, str]]) -> None:
    server.zones[domain] = FakeName(mx=tuple((pref, name) for pref, name, _ in hosts))
    for _, name, addr in hosts:
        server.zones[name] = FakeName(a=(addr,))


# -- accounting ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctFile:
    """An accounting file as Python's csv module reads it."""

    header_line: str
    header: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def of(self, *types: str, rcpt: str | None = None) -> list[dict[str, str]]:
        return [
            r
            for r in self.rows
            if r["type"] in types and (rcpt is None or r["rcpt"].lower() == rcpt.lower())
        ]

    def final(self) -> list[dict[str, str]]:
        return self.of("d", "b")


def read_acct(path: Path) -> AcctFile:
    if not path.exists():
        return AcctFile(header_line="", header=(), rows=())
    text = path.read_text("utf-8")
    first = text.split("\n", 1)[0].rstrip("\r")
    # Only whole lines: the daemon may be in the middle of appending a batch.
    whole = text[: text.rfind("\n") + 1]
    reader = csv.reader(whole.splitlines())
    header = tuple(next(reader, []))
    rows = []
    for values in reader:
        assert len(values) == len(header), f"row with {len(values)} fields: {values}"
        rows.append(dict(zip(header, values, strict=True)))
    return AcctFile(header_line=first, header=header, rows=tuple(rows))


# -- DSNs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnReport:
    """One delivery status notification (RFC 3464) as received."""

    envelope_rcpt: str
    report_type: str
    per_message: dict[str, str]
    per_recipient: tuple[dict[str, str], ...]
    original_headers: dict[str, str]
    subject: str
    from_header: str
    raw: bytes = field(repr=False)

    @property
    def statuses(self) -> list[str]:
        return [r.get("status", "") for r in self.per_recipient]

    @property
    def final_recipients(self) -> list[str]:
        return [
            r.get("final-recipient", "").split(";", 1)[-1].strip().lower()
            for r in self.per_recipient
        ]


def _fields(block: email.message.Message) -> dict[str, str]:
    return {k.lower(): " ".join(str(v).split()) for k, v in block.items()}


def parse_dsn(raw: bytes, envelope_rcpt: str = "") -> DsnReport | None:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if msg.get_content_type() != "multipart/report":
        return None
    per_message: dict[str, str] = {}
    per_rcpt: list[dict[str, str]] = []
    original: dict[str, str] = {}
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            payload = part.get_payload()
            assert isinstance(payload, list), "delivery-status part without field blocks"
            blocks = [b for b in payload if isinstance(b, email.message.Message)]
            per_message = _fields(blocks[0])
            per_rcpt = [_fields(b) for b in blocks[1:]]
        elif ctype in ("message/rfc822", "text/rfc822-headers") and not original:
            payload = part.get_payload()
            if (
                isinstance(payload, list)
                and payload
                and isinstance(payload[0], email.message.Message)
            ):
                original = _fields(payload[0])
            elif isinstance(payload, str):
                inner = email.message_from_string(payload, policy=email.policy.compat32)
                original = _fields(inner)
    return DsnReport(
        envelope_rcpt=envelope_rcpt,
        report_type=str(msg.get_param("report-type", "") or ""),
        per_message=per_message,
        per_recipient=tuple(per_rcpt),
        original_headers=original,
        subject=str(msg.get("Subject", "")),
        from_header=str(msg.get("From", "")),
        raw=raw,
    )


def dsns_at(receiver: PostfixReceiver) -> list[DsnReport]:
    out = []
    for m in receiver.messages():
        report = parse_dsn(m.raw, m.recipient)
        if report is not None:
            out.append(report)
    return out


def return_path(raw: bytes) -> str | None:
    """The Return-Path Postfix's virtual(8) wrote: the envelope sender of the delivery."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    value = msg.get("Return-Path")
    return None if value is None else str(value).strip()


# -- waiting ---------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_len(
    fetch: Callable[[], list[T]], n: int, timeout: float, what: str, interval: float = 0.1
) -> list[T]:
    """Call ``fetch`` until it returns at least ``n`` items; return them."""
    found: list[list[T]] = []

    def enough() -> bool:
        found[:] = [fetch()]
        return len(found[0]) >= n

    wait_for(enough, timeout, f"{n} {what}", interval)
    return found[0]


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def waves(times: Sequence[float], gap: float = 1.0) -> list[list[float]]:
    """Split sorted event times into clusters separated by more than ``gap`` seconds."""
    out: list[list[float]] = []
    for t in sorted(times):
        if out and t - out[-1][-1] <= gap:
            out[-1].append(t)
        else:
            out.append([t])
    return out


# -- wire counters ---------------------------------------------------------------------------

_SO_ATTACH_FILTER = 26
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
#: Classic BPF on lo's Ethernet framing: IPv4, TCP, not a fragment, SYN set and ACK clear.
_SYN_FILTER = (
    (0x28, 0, 0, 12),  # ldh [12]            ethertype
    (0x15, 0, 9, 0x0800),  # jeq IPv4 else drop
    (0x30, 0, 0, 23),  # ldb [23]            IP protocol
    (0x15, 0, 7, 6),  # jeq TCP else drop
    (0x28, 0, 0, 20),  # ldh [20]            flags + fragment offset
    (0x45, 5, 0, 0x1FFF),  # jset fragment → drop
    (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)   IP header length
    (0x50, 0, 0, 27),  # ldb [x+27]          TCP flags (14 + 13)
    (0x54, 0, 0, 0x12),  # and SYN|ACK
    (0x15, 0, 1, 0x02),  # jeq SYN only
    (0x06, 0, 0, 128),  # ret 128: accept
    (0x06, 0, 0, 0),  # ret 0: drop
)


@dataclass(frozen=True, slots=True)
class Syn:
    at: float  #: time.monotonic() when seen
    src: str
    dst: str
    dport: int


class SynCounter:
    """Counts TCP SYNs (connection attempts) on the loopback interface.

    An AF_PACKET socket with a BPF filter, so only SYNs reach Python; each packet is counted
    once (lo shows it outgoing and incoming; the outgoing copy is skipped). A refused
    connection (RST) is counted too: that is what "connection attempts" means in T30.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._syns: list[Syn] = []
        self._prog: Any = None

    def start(self) -> SynCounter:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        insns = b"".join(struct.pack("HBBI", *i) for i in _SYN_FILTER)
        self._prog = ctypes.create_string_buffer(insns)
        fprog = struct.pack("HL", len(_SYN_FILTER), ctypes.addressof(self._prog))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("lo", 0))
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="syn-counter", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(256)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == _PACKET_OUTGOING or len(data) < 34:
                continue
            ihl = (data[14] & 0x0F) * 4
            src = socket.inet_ntoa(data[26:30])
            dst = socket.inet_ntoa(data[30:34])
            (dport,) = struct.unpack("!H", data[14 + ihl + 2 : 14 + ihl + 4])
            with self._lock:
                self._syns.append(Syn(time.monotonic(), src, dst, dport))

    def barrier(self, timeout: float = 10.0) -> None:
        """Return once every SYN sent before this call has been counted.

        Each SYN is stamped when the counting thread reads it, which can lag behind a busy
        machine; a marker SYN (to a closed port on 127.0.0.254) sent now and seen counted
        means everything before it was read, so a time taken after the barrier separates
        earlier SYNs from later ones.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.254", 0))
            port = probe.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as marker:
            marker.settimeout(1.0)
            with contextlib.suppress(OSError):
                marker.connect(("127.0.0.254", port))
        deadline = time.monotonic() + timeout
        while not self.syns("127.0.0.254", port):
            if time.monotonic() > deadline:
                raise AssertionError("the SYN counter did not see its marker")
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

    def syns(
        self, dst: str, dport: int | None = None, *, since: float = 0.0, until: float = math.inf
    ) -> list[Syn]:
        with self._lock:
            return [
                s
                for s in self._syns
                if s.dst == dst and (dport is None or s.dport == dport) and since <= s.at <= until
            ]


#: /proc/net/tcp states (include/net/tcp_states.h) that hold a connection slot.
_OPEN_STATES = frozenset({"01", "02"})  # ESTABLISHED, SYN_SENT


def _proc_addr(ip: str, port: int) -> str:
    packed = socket.inet_aton(ip)
    return f"{struct.unpack('<I', packed)[0]:08X}:{port:04X}"


class ConnSampler:
    """Samples, every ``interval`` seconds, how many client sockets are connected to
    ``ip:port`` (from /proc/net/tcp: remote address = ip:port, ESTABLISHED or SYN_SENT)."""

    def __init__(self, ip: str, port: int, interval: float = 0.05) -> None:
        self.remote = _proc_addr(ip, port)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conn-sampler", daemon=True)

    def count(self) -> int:
        # By local address: /proc/net/tcp is read in chunks, and a socket table that changes
        # between two chunks can list one socket twice.
        local: set[str] = set()
        with contextlib.suppress(OSError), open("/proc/net/tcp", encoding="ascii") as f:
            next(f, None)
            for line in f:
                parts = line.split(None, 4)
                if len(parts) >= 4 and parts[2] == self.remote and parts[3] in _OPEN_STATES:
                    local.add(parts[1])
        return len(local)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.count()))
            self._stop.wait(self.interval)

    def start(self) -> ConnSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    @property
    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)

    def __enter__(self) -> ConnSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
