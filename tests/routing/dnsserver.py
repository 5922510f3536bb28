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
import time
from collections.abc import Iterator, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sluice.net.dnsserver import DnsServer, run_dns_server

__all__ = ["DNSMASQ", "DnsTestServer", "run_dns_server", "run_dnsmasq"]

#: The server lives in the product (``sluice demo`` uses it); tests keep their old name.
DnsTestServer = DnsServer

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
_POLL = 0.05  # seconds between checks of the stop flag
_SOA = "ns.test. hostmaster.test. 1 3600 600 86400 {minimum}"


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
