"""The daemon in-process: intake → spool → scheduler → delivery → accounting and DSNs.

Receivers are Sluice's own simulators on loopback; mail is routed with ``route`` so no DNS
is involved. These tests check the wiring between parts; the parts have their own suites.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import smtplib
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

import pytest

from sluice.config import load_config_text
from sluice.daemon.lifecycle import Daemon, DaemonOptions
from sluice.daemon.system_clock import SystemClock
from sluice.errors import SpoolUnavailableError
from sluice.message import MessageId
from sluice.sim import Ledger, ReceiverSpec, SimCluster
from sluice.spool.base import RcptUpdate
from sluice.spool.sqlite import SqliteSpool

pytestmark = pytest.mark.interop


async def _wait(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _send(port: int, sender: str, rcpts: list[str], body: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.sendmail(sender, rcpts, body)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def _world(
    tmp_path: Path, receivers: dict[str, str], config: str
) -> AsyncIterator[tuple[SimCluster, Daemon, int]]:
    """Simulated receivers (name → loopback address, one shared port, recording), and a
    daemon on ``config`` (``PORT`` stands for the receivers' port) with a listener and a
    spool in ``tmp_path``. Yields the cluster, the daemon and the listener's port."""
    cluster = SimCluster(
        [ReceiverSpec(name=name, host=host) for name, host in receivers.items()], record=True
    )
    await cluster.start()
    port = next(iter(cluster)).port
    text = (
        f"smtp-listener 127.0.0.1:{_free_port()}\n<spool {tmp_path}/spool>\n</spool>\n"
        + config.replace("PORT", str(port))
    )
    daemon = Daemon(load_config_text(text), SystemClock(), DaemonOptions(hostname="mta.test"))
    await daemon.start()
    try:
        yield cluster, daemon, daemon.bound[0][1]
    finally:
        await daemon.stop()
        await cluster.stop()


async def _run_flow(tmp_path: Path) -> tuple[list[dict[str, str]], Ledger, Ledger]:
    config = (
        "<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n"
        "<domain dest.test>\n route [127.0.0.31]:PORT\n</domain>\n"
        "<domain senders.test>\n route [127.0.0.32]:PORT\n</domain>\n"
        f"<acct-file {tmp_path}/acct.csv>\n records r,d,b\n</acct-file>\n"
        "postmaster postmaster@mta.test\n"
    )
    receivers = {"dest": "127.0.0.31", "senders": "127.0.0.32"}
    async with _world(tmp_path, receivers, config) as (cluster, daemon, listen_port):
        body = b"Subject: hello\r\nMessage-ID: <m1@test>\r\n\r\nbody\r\n"
        rcpts = ["ok@dest.test", "t550-gone@dest.test"]
        await asyncio.to_thread(_send, listen_port, "alice@senders.test", rcpts, body)
        dest, senders = cluster["dest"].ledger, cluster["senders"].ledger
        assert dest is not None
        assert senders is not None
        await _wait(lambda: len(dest.entries) >= 1 and len(senders.entries) >= 1)
        await _wait(lambda: not daemon.remaining)
    with open(tmp_path / "acct.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, dest, senders


def test_delivery_bounce_dsn_and_accounting(tmp_path: Path) -> None:
    rows, dest, senders = asyncio.run(_run_flow(tmp_path))
    (delivered,) = dest.entries
    assert delivered.recipients == ("ok@dest.test",)
    (dsn,) = senders.entries
    assert dsn.mail_from == ""
    assert dsn.recipients == ("alice@senders.test",)
    kinds = sorted((r["type"], r["rcpt"]) for r in rows)
    assert ("d", "ok@dest.test") in kinds
    assert ("b", "t550-gone@dest.test") in kinds
    assert ("d", "alice@senders.test") in kinds  # the DSN itself was delivered
    bounce = next(r for r in rows if r["type"] == "b")
    assert bounce["dsnStatus"].startswith("5.")
    assert bounce["bounceCat"]
    assert bounce["queue"] == "dest.test/{default}"


async def _run_warmup(tmp_path: Path) -> tuple[int, int]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    config = (
        "<source 127.0.0.1>\n always-allow-relaying yes\n default-virtual-mta new\n</source>\n"
        "<warmup-plan first>\n day 1 3\n day 2 6\n</warmup-plan>\n"
        "<virtual-mta new>\n smtp-source-host 127.0.0.34 new.test\n"
        f" warmup-plan first\n warmup-start {today}\n</virtual-mta>\n"
        "<domain dest.test>\n route [127.0.0.33]:PORT\n</domain>\n"
    )
    async with _world(tmp_path, {"dest": "127.0.0.33"}, config) as (cluster, daemon, port):
        for i in range(5):
            body = f"Subject: {i}\r\n\r\nbody\r\n".encode()
            await asyncio.to_thread(_send, port, "a@src.test", [f"u{i}@dest.test"], body)
        dest = cluster["dest"].ledger
        assert dest is not None
        await _wait(lambda: len(dest.entries) >= 3)
        await asyncio.sleep(1.0)  # give a wrongly unthrottled queue time to send more
        return len(dest.entries), len(daemon.remaining)


def test_warmup_plan_caps_the_first_day(tmp_path: Path) -> None:
    delivered, waiting = asyncio.run(_run_warmup(tmp_path))
    assert delivered == 3
    assert waiting == 2


async def _run_patterns_and_notify(tmp_path: Path) -> tuple[list[str], list[str]]:
    config = (
        "<pattern-list by-sender>\n mail-from /@news\\./ virtual-mta=mkt\n</pattern-list>\n"
        "<source 127.0.0.1>\n always-allow-relaying yes\n pattern-list by-sender\n</source>\n"
        "<virtual-mta mkt>\n smtp-source-host 127.0.0.36 mkt.test\n</virtual-mta>\n"
        "<domain dest.test>\n route [127.0.0.37]:PORT\n</domain>\n"
        "<domain news.test>\n route [127.0.0.38]:PORT\n</domain>\n"
        "<domain plain.test>\n route [127.0.0.38]:PORT\n</domain>\n"
    )
    receivers = {"dest": "127.0.0.37", "senders": "127.0.0.38"}
    async with _world(tmp_path, receivers, config) as (cluster, daemon, listen_port):
        body = b"Subject: t\r\n\r\nbody\r\n"

        def send_all() -> None:
            _send(listen_port, "a@news.test", ["u1@dest.test"], body)
            with smtplib.SMTP("127.0.0.1", listen_port) as s:
                s.sendmail("b@plain.test", ["u2@dest.test"], body, rcpt_options=["NOTIFY=SUCCESS"])

        await asyncio.to_thread(send_all)
        dest, senders = cluster["dest"].ledger, cluster["senders"].ledger
        assert dest is not None
        assert senders is not None
        await _wait(lambda: len(dest.entries) >= 2 and len(senders.entries) >= 1)
        await _wait(lambda: not daemon.remaining)
        by_rcpt = [f"{e.recipients[0]} {e.source_ip}" for e in dest.entries]
        dsns = [f"{e.mail_from or '<>'} {e.recipients[0]}" for e in senders.entries]
        return sorted(by_rcpt), dsns


def test_pattern_list_picks_the_vmta_and_notify_success_earns_a_relayed_dsn(
    tmp_path: Path,
) -> None:
    by_rcpt, dsns = asyncio.run(_run_patterns_and_notify(tmp_path))
    assert by_rcpt == ["u1@dest.test 127.0.0.36", "u2@dest.test 127.0.0.1"]
    # The simulator does not offer DSN, so Sluice reports the relay itself (RFC 3461 §6.2).
    assert dsns == ["<> b@plain.test"]


async def _run_with_flaky_marks(tmp_path: Path) -> tuple[int, int, int]:
    config = (
        "<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n"
        "<domain dest.test>\n route [127.0.0.39]:PORT\n</domain>\n"
    )
    failures = [2]
    async with _world(tmp_path, {"dest": "127.0.0.39"}, config) as (cluster, daemon, port):
        spool = daemon.spool
        assert spool is not None
        real_mark = spool.mark
        real_remove = spool.remove

        async def flaky_mark(updates: Sequence[RcptUpdate]) -> None:
            if failures[0]:
                failures[0] -= 1
                raise SpoolUnavailableError("injected: disk I/O error")
            await real_mark(updates)

        async def flaky_remove(msg_id: MessageId) -> None:
            # A finished message is removed without its marks; when the removal fails, its
            # marks are written instead (and fail here too, once), and both are retried.
            if failures[0]:
                failures[0] -= 1
                raise SpoolUnavailableError("injected: disk I/O error")
            await real_remove(msg_id)

        real_remove_nowait = spool.remove_nowait

        def flaky_remove_nowait(msg_id: MessageId) -> asyncio.Future[None]:
            # The manager removes through this one (a future per message, no task).
            if failures[0]:
                failures[0] -= 1
                failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                failed.set_exception(SpoolUnavailableError("injected: disk I/O error"))
                return failed
            return real_remove_nowait(msg_id)

        proxy = _Proxy(
            spool, mark=flaky_mark, remove=flaky_remove, remove_nowait=flaky_remove_nowait
        )
        daemon.spool = cast(SqliteSpool, proxy)
        try:
            for i in range(3):
                body = f"Subject: {i}\r\n\r\nbody\r\n".encode()
                await asyncio.to_thread(_send, port, "a@src.test", [f"u{i}@dest.test"], body)
            dest = cluster["dest"].ledger
            assert dest is not None
            await _wait(lambda: len(dest.entries) >= 3)
            await _wait(lambda: not daemon.remaining and not daemon.envelopes)
            delivered = len(dest.entries)
        finally:
            daemon.spool = spool
    reopened = await SqliteSpool.open(str(tmp_path / "spool"))
    left = len(list(reopened.recover()))
    await reopened.close()
    return delivered, left, failures[0]


class _Proxy:
    """Delegates to ``inner`` except for the attributes given."""

    def __init__(self, inner: object, **overrides: object) -> None:
        self._inner = inner
        self._overrides = overrides

    def __getattr__(self, name: str) -> object:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._inner, name)


def test_a_failed_spool_update_is_retried_not_forgotten(tmp_path: Path) -> None:
    delivered, left, unused_failures = asyncio.run(_run_with_flaky_marks(tmp_path))
    assert unused_failures == 0  # the injected failures happened
    assert delivered == 3
    assert left == 0  # every message reached its final state and was removed


async def _run_421_at_rcpt(tmp_path: Path) -> list[dict[str, str]]:
    config = (
        "<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n"
        "<domain dest.test>\n route [127.0.0.40]:PORT\n</domain>\n"
        f"<acct-file {tmp_path}/acct.csv>\n records t\n</acct-file>\n"
    )
    async with _world(tmp_path, {"dest": "127.0.0.40"}, config) as (_cluster, _daemon, port):
        body = b"Subject: t\r\n\r\nbody\r\n"
        await asyncio.to_thread(_send, port, "a@src.test", ["t421-busy@dest.test"], body)
        acct = tmp_path / "acct.csv"

        def rows() -> list[dict[str, str]]:
            if not acct.exists():
                return []
            with open(acct, newline="") as fh:
                return list(csv.DictReader(fh))

        await _wait(lambda: len(rows()) >= 1)
        return rows()


def test_a_421_at_rcpt_is_recorded_as_transient(tmp_path: Path) -> None:
    (row, *_) = asyncio.run(_run_421_at_rcpt(tmp_path))
    assert row["type"] == "t"
    assert row["rcpt"] == "t421-busy@dest.test"
    assert row["dsnDiag"].startswith("smtp;421")


async def _run_cpu_gate(tmp_path: Path) -> str:
    config = "max-cpu-usage 1\n<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n"
    burner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"
    )
    try:
        async with _world(tmp_path, {"dest": "127.0.0.41"}, config) as (_c, daemon, port):

            def greeting() -> str:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    return sock.recv(200).decode()

            deadline = asyncio.get_running_loop().time() + 15
            banner = await asyncio.to_thread(greeting)
            while not banner.startswith("421") and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.5)
                banner = await asyncio.to_thread(greeting)
            assert daemon.intake is not None
            return banner
    finally:
        burner.kill()
        await burner.wait()


def test_max_cpu_usage_refuses_new_injections_while_the_machine_is_busy(tmp_path: Path) -> None:
    banner = asyncio.run(_run_cpu_gate(tmp_path))
    assert banner.startswith("421 4.3.2")


async def _run_reload(tmp_path: Path) -> tuple[list[str], list[str], list[str]]:
    before = (
        "<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n"
        "<domain dest.test>\n route [127.0.0.42]:PORT\n</domain>\n"
    )
    receivers = {"old": "127.0.0.42", "new": "127.0.0.43"}
    async with _world(tmp_path, receivers, before) as (cluster, daemon, port):
        body = b"Subject: t\r\n\r\nbody\r\n"
        await asyncio.to_thread(_send, port, "a@src.test", ["u1@dest.test"], body)
        old, new = cluster["old"].ledger, cluster["new"].ledger
        assert old is not None
        assert new is not None
        await _wait(lambda: len(old.entries) == 1)
        sim_port = cluster["old"].port
        after = load_config_text(
            f"smtp-listener 127.0.0.1:{port}\n<spool {tmp_path}/spool>\n</spool>\n"
            "<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n"
            f"<domain dest.test>\n route [127.0.0.43]:{sim_port}\n</domain>\n"
            "dns-server 127.0.0.1:5353\n"
        )
        restart = daemon.reload(after)
        await asyncio.to_thread(_send, port, "a@src.test", ["u2@dest.test"], body)
        await _wait(lambda: len(new.entries) == 1)
        return (
            [e.recipients[0] for e in old.entries],
            [e.recipients[0] for e in new.entries],
            restart,
        )


def test_reload_applies_new_routes_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    old, new, restart = asyncio.run(_run_reload(tmp_path))
    assert old == ["u1@dest.test"]
    assert new == ["u2@dest.test"]
    assert restart == ["dns-server"]
