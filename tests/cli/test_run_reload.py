"""``sluice run``: SIGHUP reloads the configuration; a broken file changes nothing."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(port: int, spool: Path, extra: str = "") -> str:
    return (
        f"smtp-listener 127.0.0.1:{port}\n<spool {spool}>\n</spool>\n"
        "<source 127.0.0.1>\n always-allow-relaying yes\n</source>\n" + extra
    )


def _relay_from(port: int, source: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10) as s:
        s.ehlo("c.test")
        s.mail("a@x.test")
        code, _ = s.rcpt("v@ext.test")
        return code


def _wait_for(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_sighup_reloads_sources_and_refuses_a_broken_file(tmp_path: Path) -> None:
    port = _free_port()
    conf = tmp_path / "sluice.conf"
    conf.write_text(_config(port, tmp_path / "spool"))
    log = tmp_path / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "run", "-c", str(conf), "--no-deliver"],
            stderr=err,
        )
    try:
        _wait_for(lambda: "sluice ready" in log.read_text())
        assert _relay_from(port, "127.0.0.66") == 550

        conf.write_text(_config(port, tmp_path / "spool", "max-smtp-out banana\n"))
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: "reload refused" in log.read_text())
        assert _relay_from(port, "127.0.0.66") == 550

        trusted = "<source 127.0.0.66>\n always-allow-relaying yes\n</source>\n"
        conf.write_text(_config(port, tmp_path / "spool", trusted))
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: "configuration reloaded" in log.read_text())
        assert _relay_from(port, "127.0.0.66") == 250
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
