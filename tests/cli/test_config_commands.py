"""``sluice check-config`` and ``sluice explain`` run as real subprocesses from the repo root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEED = "examples/seed.conf"
TEN = "tests/config/data/ten-mistakes.conf"


def _sluice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_check_config_seed_names_the_hotmail_queue() -> None:
    result = _sluice("check-config", SEED)
    assert result.returncode == 0, result.stderr
    assert "live.com, msn.com, outlook.com -> queue hotmail.com (every VMTA)" in result.stdout
    assert "listeners: 127.0.0.1:2525" in result.stdout
    assert "marketing = marketing-1, marketing-2" in result.stdout
    assert f"{SEED}:76: dkim-sign: warning:" in result.stdout


def test_check_config_shared_seed_path() -> None:
    shared = REPO.parent / "shared" / "seed" / "seed.conf"
    if not shared.exists():
        pytest.skip("../shared/seed/seed.conf is not present")
    result = _sluice("check-config", "../shared/seed/seed.conf")
    assert result.returncode == 0, result.stderr
    assert "-> queue hotmail.com" in result.stdout


def test_check_config_json() -> None:
    result = _sluice("check-config", SEED, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    for vmta in ("{default}", "transactional", "marketing-1", "marketing-2"):
        assert doc["queue_map"][vmta] == {
            "live.com": "hotmail.com",
            "msn.com": "hotmail.com",
            "outlook.com": "hotmail.com",
        }
    assert doc["pools"] == {"marketing": ["marketing-1", "marketing-2"]}
    assert [w["line"] for w in doc["warnings"]] == [75, 76]


def test_check_config_ten_mistakes_exit_2_with_every_line() -> None:
    result = _sluice("check-config", TEN)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(f"{TEN}:")]
    numbers = [int(ln.split(":")[1]) for ln in lines if ln.split(":")[1].isdigit()]
    assert numbers == [3, 5, 8, 9, 11, 15, 18, 24, 26, 27]
    assert result.stderr.rstrip().endswith("10 errors, 0 warnings")
    doc = json.loads(_sluice("check-config", TEN, "--json").stdout)
    assert doc["ok"] is False
    assert [e["line"] for e in doc["errors"]] == [3, 5, 8, 9, 11, 15, 18, 24, 26, 27]


def test_check_config_missing_file_exit_2() -> None:
    result = _sluice("check-config", "no/such/file.conf")
    assert result.returncode == 2
    assert "no/such/file.conf: file: cannot read" in result.stderr


def test_explain_msn_transactional_json() -> None:
    result = _sluice("explain", SEED, "msn.com/transactional", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["queue"] == "hotmail.com/transactional"
    s = doc["settings"]
    expect = {
        "max-smtp-out": (20, "20", 55),
        "max-msg-per-connection": (100, "100", 56),
        "max-errors-per-connection": (5, "5", 57),
        "max-msg-rate": ({"count": 5000, "seconds": 3600}, "5000/h", 60),
        "retry-after": ([1800], "30m", 51),
        "min-retry-interval": (900, "15m", 61),
        "bounce-after": (345600, "4d", 52),
        "bounce-on-4xx-status": (False, "no", 64),
        "use-starttls": (True, "yes", 74),
        "require-starttls": (False, "no", 75),
        "dkim-sign": ("yes", "yes", 76),
    }
    for name, (value, text, line) in expect.items():
        assert s[name]["value"] == value, name
        assert s[name]["text"] == text, name
        assert s[name]["origin"] == f"{SEED}:{line}", name
    assert s["max-msg-rate"]["written_as"] == "max-msg-per-hour 5000"
    rules = doc["backoff_rules"]
    keys = ("code", "literal", "duration", "max_smtp_out", "max_msg_rate", "origin")
    assert [tuple(r[k] for k in keys) for r in rules] == [
        ("421", "RP-001", 3600, 5, "1000/h", f"{SEED}:70"),
        ("421", "4.3.2", 2700, 2, "500/h", f"{SEED}:71"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("queue", "bounce_after", "line"),
    [
        ("hotmail.com/marketing-1", "2h", 41),
        ("example.org/marketing-2", "2h", 38),
        ("example.org/transactional", "4d", 83),
    ],
)
def test_explain_bounce_after(queue: str, bounce_after: str, line: int) -> None:
    doc = json.loads(_sluice("explain", SEED, queue, "--json").stdout)
    assert doc["settings"]["bounce-after"]["text"] == bounce_after
    assert doc["settings"]["bounce-after"]["origin"] == f"{SEED}:{line}"
    if queue == "example.org/marketing-2":
        assert doc["settings"]["max-smtp-out"]["value"] == 50
        assert doc["settings"]["max-msg-rate"]["text"] == "200/s"


def test_explain_text_output_and_default_vmta() -> None:
    result = _sluice("explain", SEED, "live.com")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("queue hotmail.com/{default}")
    assert "queue-to live.com -> hotmail.com" in first
    assert any(
        ln.split()[:2] == ["connect-timeout", "2m"] and ln.rstrip().endswith("default")
        for ln in result.stdout.splitlines()
    )
    assert "421 RP-001 *, 1h, 5, 1000" in result.stdout


def test_explain_unknown_vmta_and_bad_file() -> None:
    result = _sluice("explain", SEED, "x.com/ghost")
    assert result.returncode == 1
    assert "no virtual-mta named 'ghost'" in result.stderr
    assert _sluice("explain", TEN, "x.com").returncode == 2
