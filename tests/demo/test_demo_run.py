"""``sluice demo`` end to end: Sluice, the simulators and the DNS server on loopback."""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvloop
from rich.console import Console

from sluice.cli import demo as demo_cli
from sluice.cli.main import _COMMAND_MODULES
from sluice.demo import DemoOptions, DemoSummary, Story, campaign, read_acct, run_demo

SOURCES = {"127.0.0.2": "transactional", "127.0.0.3": "marketing-1", "127.0.0.4": "marketing-2"}


def _run(tmp_path: Path, **options: Any) -> tuple[DemoSummary, str]:
    console = Console(record=True, width=120, force_terminal=False)
    opts = DemoOptions(live=False, keep=True, workdir=str(tmp_path / "demo"), **options)
    summary = uvloop.run(run_demo(opts, console))
    return summary, console.export_text()


def test_demo_of_200_messages_delivers_every_recipient_from_the_right_ip(tmp_path: Path) -> None:
    summary, text = _run(tmp_path, messages=200, dead_share=0.0)
    assert summary.ok, text
    assert summary.completed
    acct = read_acct(str(tmp_path / "demo" / "acct.csv"))
    assert acct.header[:5] == ("type", "timeLogged", "timeQueued", "orig", "rcpt")
    delivered = acct.of("d")
    sent = {m.rcpt: m for m in campaign(200, dead_share=0.0)}
    assert collections.Counter(r["rcpt"] for r in delivered) == collections.Counter(list(sent))
    assert len(acct.of("r")) == 200
    assert not acct.of("b")
    for record in delivered:
        msg = sent[record["rcpt"]]
        assert SOURCES[record["dlvSourceIp"]] == record["vmta"]
        if msg.vmta == "transactional":
            assert record["dlvSourceIp"] == "127.0.0.2"
        else:
            assert record["dlvSourceIp"] in ("127.0.0.3", "127.0.0.4")
            assert record["vmtaPool"] == "marketing"
    # The receivers' side: as many messages per source IP as the accounting file says.
    seen: collections.Counter[str] = collections.Counter()
    for row in summary.receivers:
        seen.update(row.by_ip)
    assert seen == collections.Counter(r["dlvSourceIp"] for r in delivered)
    assert seen["127.0.0.3"]
    assert seen["127.0.0.4"]
    assert seen["127.0.0.2"]
    assert "127.0.0.2" in text
    assert "marketing-1" in text
    assert "demo ok" in text


def test_cli_exits_0_and_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="sluice demo")
    demo_cli.add_arguments(parser)
    args = parser.parse_args(["--messages", "100", "--dead", "0", "--no-live"])
    assert demo_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "injected 100/100 (accepted 100)" in out
    assert "Accounting file:" in out
    assert "r 100, d 100" in out
    assert "demo ok" in out
    acct_line = next(line for line in out.splitlines() if line.startswith("Accounting file:"))
    workdir = Path(acct_line.split(":", 1)[1].strip()).parent
    assert workdir.name.startswith("sluice-demo-")
    assert not workdir.exists()  # removed without --keep


def test_bounces_earn_dsns_delivered_to_the_sender(tmp_path: Path) -> None:
    summary, text = _run(tmp_path, messages=200, dead_share=0.1)
    bounces = [c for c in summary.checks if "DSN" in c.text]
    assert summary.acct_counts.get("b", 0) > 0
    assert bounces
    assert bounces[0].ok, text


def test_python_m_sluice_demo(tmp_path: Path) -> None:
    assert "sluice.cli.demo" in _COMMAND_MODULES
    proc = subprocess.run(
        [sys.executable, "-m", "sluice", "demo", "--messages", "200", "--dead", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo ok" in proc.stdout


@pytest.mark.slow
def test_throttle_story_meets_rp001_and_still_delivers_everything(tmp_path: Path) -> None:
    summary, text = _run(tmp_path, messages=2000, dead_share=0.0, story=Story.THROTTLE)
    microsoft = next(r for r in summary.receivers if r.name == "microsoft")
    assert microsoft.refusals.get("RP-001", 0) > 0, text
    assert microsoft.refusals.get("S3150", 0) == 0, text
    assert summary.ok, text
