"""Tiny loopback DNS servers for tests: our own (dnspython message API) and a real dnsmasq.

``DnsTestServer`` / ``run_dns_server(zones)`` serve a ``{name: FakeName}`` mapping (the same one
``sluice.routing.fake.FakeResolver`` reads) over UDP on 127.0.0.1 and a free port, from a
background thread, so sync and async tests can both use it:

    absent name                     → NXDOMAIN (with an SOA when the name asks for negative_ttl)
    name without records of a type  → NOERROR, empty answer (NODATA)
    FakeName(failure=SERVFAIL)      → RCODE SERVFAIL for every query of the name
    FakeName(failure=TIMEOUT)       → no reply at all (the client times out)

``server.zones`` may be changed while it runs (a dead domain can come back); ``server.queries``
lists every (qtype, name) received. ``run_dnsmasq(args)`` starts Debian's dnsmasq on a free
loopback port with the given ``--mx-host=``/``--host-record=`` options and stops it afterwards.

Later end-to-end tests import this module (``from tests.routing.dnsserver import
run_dns_server`` under ``python -m pytest``, which puts the repository root on sys.path).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sluice.routing import DnsFailure, FakeName, normalize_name

__all__ = ["DNSMASQ", "DnsTestServer", "run_dns_server", "run_dnsmasq"]

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
_POLL = 0.05  # seconds between checks of the stop flag
_SOA = "ns.test. hostmaster.test. 1 3600 600 86400 {minimum}"


class DnsTestServer:
    """A UDP DNS server answering from ``zones``; use as a context manager."""

    def __init__(self, zones: Mapping[str, FakeName], host: str = "127.0.0.1") -> None:
        self.zones: dict[str, FakeName] = {normalize_name(k): v for k, v in zones.items()}
        self.queries: list[tuple[str, str]] = []
        self.host = host
        self.port = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> DnsTestServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        sock.settimeout(_POLL)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="dns-test-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self._answer(dns.message.from_wire(wire))
            except Exception:  # junk in: no reply, like a real server under attack
                continue
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = normalize_name(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((rdtype, name))
        entry = self.zones.get(name)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if entry is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        if entry.failure is DnsFailure.TIMEOUT:
            return None
        if entry.failure is DnsFailure.SERVFAIL:
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        values: list[str] = []
        if rdtype == "MX":
            values = [f"{pref} {normalize_name(x).rstrip('.')}." for pref, x in entry.mx]
        elif rdtype == "A":
            values = list(entry.a)
        elif rdtype == "AAAA":
            values = list(entry.aaaa)
        if values:
            response.answer.append(
                dns.rrset.from_text_list(question.name, entry.ttl, "IN", rdtype, values)
            )
        elif entry.negative_ttl > 0:
            soa = _SOA.format(minimum=entry.negative_ttl)
            response.authority.append(
                dns.rrset.from_text_list("test.", entry.negative_ttl, "IN", "SOA", [soa])
            )
        return response


@contextlib.contextmanager
def run_dns_server(
    zones: Mapping[str, FakeName], host: str = "127.0.0.1"
) -> Iterator[tuple[str, int]]:
    """Serve ``zones`` on ``host`` and a free UDP port; yields ``(host, port)``."""
    with DnsTestServer(zones, host) as server:
        yield server.address


def _free_port(host: str) -> int:
    # A port free for both UDP and TCP right now (dnsmasq binds both).
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for dnsmasq")


@contextlib.contextmanager
def run_dnsmasq(
    options: Sequence[str], host: str = "127.0.0.1", domain: str = "test"
) -> Iterator[tuple[str, int]]:
    """Run dnsmasq authoritative-ish for ``.domain`` with ``options``; yields ``(host, port)``."""
    port = _free_port(host)
    argv = [
        DNSMASQ,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--bind-interfaces",
        f"--listen-address={host}",
        f"--port={port}",
        f"--local=/{domain}/",
        "--log-facility=-",
        "--quiet-dhcp",
        *options,
    ]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_until_answering(proc, host, port)
        yield host, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_until_answering(proc: subprocess.Popen[bytes], host: str, port: int) -> None:
    probe = dns.message.make_query(f"probe.{time.monotonic_ns()}.invalid", "A")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"dnsmasq exited with {proc.returncode}: {err}")
        try:
            dns.query.udp(probe, host, port=port, timeout=0.2)
        except (dns.exception.Timeout, OSError):
            continue
        return
    raise RuntimeError("dnsmasq did not answer within 10 s")
