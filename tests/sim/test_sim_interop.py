"""The simulators against independent clients (Postfix's smtp-source, swaks) and the CLI."""

from __future__ import annotations

import json
import shutil
import signal
import smtplib
import subprocess
import sys
from collections.abc import Callable

import pytest

from sluice.sim import ThreadedCluster

Sim = Callable[..., ThreadedCluster]

pytestmark = pytest.mark.interop

needs_smtp_source = pytest.mark.skipif(
    shutil.which("smtp-source") is None and shutil.which("/usr/sbin/smtp-source") is None,
    reason="Postfix's smtp-source is not installed",
)
needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


def smtp_source() -> str:
    return shutil.which("smtp-source") or "/usr/sbin/smtp-source"


@needs_smtp_source
def test_smtp_source_counts_and_concurrency(sim: Sim) -> None:
    tc = sim(sample_interval=0.1)
    host, port = tc.address("mx")
    common = ["-l", "2048", "-f", "x@src.test", "-t", "u@dst.test", f"{host}:{port}"]
    # 4 sessions reusing their connections (-d), 3 recipients per message.
    subprocess.run(
        [smtp_source(), "-d", "-s", "4", "-m", "200", "-r", "3", *common],
        check=True,
        timeout=60,
    )
    # A new connection per message.
    subprocess.run([smtp_source(), "-s", "2", "-m", "30", *common], check=True, timeout=60)
    st = tc.stats("mx").source("127.0.0.1")
    assert st.messages == 230
    assert st.recipients == 200 * 3 + 30
    assert st.connections == 4 + 30
    assert st.peak <= 4
    assert st.code(354) == 230
    assert tc.stats("mx").peak_sampled() <= 4


@needs_swaks
def test_swaks_from_other_source_addresses(sim: Sim) -> None:
    tc = sim()
    host, port = tc.address("mx")

    def swaks(source: str, to: str) -> int:
        proc = subprocess.run(
            [
                *("swaks", "--server", host, "--port", str(port), "--local-interface", source),
                *("--from", "x@src.test", "--to", to, "--silent", "2"),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        return proc.returncode

    for _ in range(3):
        assert swaks("127.0.0.2", "a@dst.test") == 0
    assert swaks("127.0.0.3", "a@dst.test,b@dst.test") == 0
    assert swaks("127.0.0.3", "t550-gone@dst.test") != 0
    st = tc.stats("mx")
    assert (st.source("127.0.0.2").messages, st.source("127.0.0.2").connections) == (3, 3)
    assert st.source("127.0.0.3").messages == 1
    assert st.source("127.0.0.3").recipients == 2
    assert st.source("127.0.0.3").tag("t550") == 1


def test_cli_prints_stats_on_exit() -> None:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "sluice.sim", "--listen", "microsoft@127.0.0.20:0"),
            *("--param", "hourly_budget=2", "--param", "throttle_rate=off", "--sample", "--json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("listening: microsoft@127.0.0.20 (microsoft) on 127.0.0.20:")
        port = int(first.rsplit(":", 1)[1])
        with smtplib.SMTP("127.0.0.20", port, source_address=("127.0.0.3", 0)) as s:
            s.sendmail("x@src.test", ["u@hotmail.com"], "Subject: 1\r\n\r\nx\r\n")
            s.sendmail("x@src.test", ["u@hotmail.com"], "Subject: 2\r\n\r\nx\r\n")
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                s.sendmail("x@src.test", ["u@hotmail.com"], "Subject: 3\r\n\r\nx\r\n")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    stats = json.loads(out)
    assert stats[0]["profile"] == "microsoft"
    source = stats[0]["by_ip"]["127.0.0.3"]
    assert source["messages"] == 2
    assert source["tags"] == {"RP-001": 1}
    assert source["replies"]["421"] == 1


def test_cli_rejects_bad_arguments() -> None:
    for args in (
        ["--listen", "nowhere"],
        ["--listen", "aol@127.0.0.20:25"],
        ["--listen", "127.0.0.20:0", "--param", "hourly_budget=3"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "sluice.sim", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 2, args
        assert "error:" in proc.stderr
