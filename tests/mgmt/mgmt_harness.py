"""Test helper: a live MgmtServer on 127.0.0.1:<free port> with a real spool and Injector.

The server runs on its own uvloop loop in a background thread; tests talk to it with
``http.client`` from the test thread (so a client can bind another loopback address, e.g.
127.0.0.66, with ``source_address``). ``stored()`` reads the spool back through
``recover()`` and ``load_body()``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from sluice.clock import FakeClock
from sluice.intake.inject import Injector
from sluice.intake.policy import SourcePolicy, SourcePolicyMap
from sluice.message import Envelope
from sluice.mgmt import AccessRule, MgmtServer, MgmtSettings
from sluice.spool import MemorySpool, SqliteSpool

#: The fake clock's wall time: 2027-01-15 08:00:00 UTC.
WALL = 1_800_000_000.0
HOSTNAME = "mta.test"
TOKEN = "s3cret-Token-For-Tests"

#: Trusted injectors: loopback may relay, X-Virtual-MTA processed as in most setups.
DEFAULT_POLICIES = SourcePolicyMap([("127.0.0.0/8", SourcePolicy(always_allow_relaying=True))])


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    headers: Mapping[str, str]
    raw: bytes


@dataclass(frozen=True, slots=True)
class Stored:
    msg_id: int
    envelope: Envelope
    body: bytes


class MgmtHarness:
    """One MgmtServer with a SqliteSpool (or a given spool) in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        access: Sequence[AccessRule] = (),
        token: str | None = None,
        policies: SourcePolicyMap = DEFAULT_POLICIES,
        known_vmtas: frozenset[str] | None = None,
        spool: MemorySpool | None = None,
        host_names: frozenset[str] = frozenset({HOSTNAME}),
        max_request_size: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.clock = FakeClock(start_wall=WALL)
        self.received: list[tuple[int, Envelope, int]] = []
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        token_file = None
        if token is not None:
            token_file = workdir / "token"
            token_file.write_text(token + "\n", encoding="utf-8")
        extra: dict[str, Any] = {}
        if max_request_size is not None:
            extra["max_request_size"] = max_request_size
        settings = MgmtSettings(
            port=0,
            access=tuple(access),
            token_file=str(token_file) if token_file else None,
            host_names=host_names,
            **extra,
        )

        def on_received(msg_id: int, env: Envelope, size: int) -> None:
            self.received.append((msg_id, env, size))

        async def start() -> tuple[Any, MgmtServer, list[tuple[str, int]]]:
            store: Any = (
                spool if spool is not None else await SqliteSpool.open(str(workdir / "spool"))
            )
            injector = Injector(
                spool=store, clock=self.clock, hostname=HOSTNAME, known_vmtas=known_vmtas
            )
            server = MgmtServer(
                settings,
                injector=injector,
                policies=policies,
                on_received=on_received,
                clock=self.clock,
            )
            return store, server, await server.start()

        self.spool, self.server, self.bound = self.run(start())
        self.host, self.port = self.bound[0]
        self._stopped = False

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ---- client -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        source: str = "127.0.0.1",
        host: str | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=10, source_address=(source, 0)
        )
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if host != "":  # "" sends no Host header at all
                conn.putheader("Host", host if host is not None else f"{self.host}:{self.port}")
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            return Answer(resp.status, parsed, dict(resp.getheaders()), raw)
        finally:
            conn.close()

    def post(
        self,
        doc: Any,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        source: str = "127.0.0.1",
        host: str | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        """POST /api/v1/messages with ``doc`` as JSON (or ``raw`` bytes as the body)."""
        all_headers = {"Content-Type": "application/json"}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        body = raw if raw is not None else json.dumps(doc).encode("utf-8")
        return self.request(
            "POST", "/api/v1/messages", body, headers=all_headers, source=source, host=host
        )

    # ---- what the spool holds -------------------------------------------------------------

    def stored(self) -> list[Stored]:
        async def read() -> list[Stored]:
            out = []
            for m in self.spool.recover():
                out.append(Stored(m.msg_id, m.envelope, await self.spool.load_body(m.msg_id)))
            return out

        result: list[Stored] = self.run(read())
        return result

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.run(self.server.stop())
        self.run(self.spool.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def header_block(message: bytes) -> list[bytes]:
    """The header lines of a stored message (unfolded: continuation lines joined)."""
    head = message.split(b"\r\n\r\n", 1)[0]
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += line
        else:
            lines.append(line)
    return lines


def header_names(message: bytes) -> list[str]:
    return [line.split(b":", 1)[0].decode("ascii").lower() for line in header_block(message)]
