"""A small authoritative DNS server on loopback, for ``sluice demo`` and the tests.

:class:`DnsServer` answers UDP queries from a ``{name: FakeName}`` mapping (the same one
:class:`sluice.routing.FakeResolver` reads) in a background thread, so synchronous and
asynchronous callers can both use it:

    absent name                     → NXDOMAIN (with an SOA when the name asks for negative_ttl)
    name without records of a type  → NOERROR, empty answer (NODATA)
    FakeName(failure=SERVFAIL)      → RCODE SERVFAIL for every query of the name
    FakeName(failure=TIMEOUT)       → no reply at all (the client times out)

``server.zones`` may be changed while it runs; ``server.queries`` lists every (qtype, name)
received. It binds a free port on ``host`` unless ``port`` is given. Sluice points its
resolver at it with the ``dns-server HOST:PORT`` directive.

Public names: DnsServer, run_dns_server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from sluice.routing import DnsFailure, FakeName, normalize_name

__all__ = ["DnsServer", "run_dns_server"]

_POLL = 0.05  # seconds between checks of the stop flag
_SOA = "ns.test. hostmaster.test. 1 3600 600 86400 {minimum}"


class DnsServer:
    """A UDP DNS server answering from ``zones``; use as a context manager."""

    def __init__(
        self, zones: Mapping[str, FakeName], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.zones: dict[str, FakeName] = {normalize_name(k): v for k, v in zones.items()}
        self.queries: list[tuple[str, str]] = []
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __enter__(self) -> DnsServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, self.port))
        sock.settimeout(_POLL)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="sluice-dns-server", daemon=True)
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
    with DnsServer(zones, host) as server:
        yield server.address
