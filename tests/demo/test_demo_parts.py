"""The demo's parts: packaged seed, demo configuration, campaign, accounting tail, clock, CLI."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import pytest

from sluice.cli import demo as demo_cli
from sluice.cli.main import main as sluice_main
from sluice.config import load_config_text
from sluice.demo import Kind, Story, campaign, demo_config_text, seed_text
from sluice.demo._progress import AcctTail
from sluice.demo._world import receivers, zones

SHARED_SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seed" / "seed.conf"


def test_packaged_seed_is_the_shared_seed() -> None:
    if not SHARED_SEED.exists():
        pytest.skip("no ../shared/seed/seed.conf next to this checkout")
    assert seed_text() == SHARED_SEED.read_text("utf-8")


def _demo_text(workdir: str = "/tmp/demo-x") -> str:
    return demo_config_text(
        seed_text(), listen_port=40125, dns=("127.0.0.1", 40053), smtp_port=40025, workdir=workdir
    )


def test_demo_config_is_the_seed_plus_demo_lines() -> None:
    seed = seed_text().splitlines()
    text = _demo_text().splitlines()
    changed = [(a, b) for a, b in zip(seed, text, strict=False) if a != b]
    assert changed == [("smtp-listener 127.0.0.1:2525", "smtp-listener 127.0.0.1:40125")]
    added = text[len(seed) :]
    assert "dns-server 127.0.0.1:40053" in added
    assert "default-smtp-port 40025" in added
    assert "<spool /tmp/demo-x/spool>" in added
    assert "    records r,d,b,t" in added


def test_demo_config_loads_and_keeps_the_seed_policy() -> None:
    config = load_config_text(_demo_text(), "demo.conf")
    assert [listener.listen.port for listener in config.listeners] == [40125]
    assert config.spools[0].path == "/tmp/demo-x/spool"
    assert config.acct_files[0].path == "/tmp/demo-x/acct.csv"
    hotmail = config.policy_for("msn.com/marketing-1")
    assert hotmail.queue == "hotmail.com/marketing-1"
    assert hotmail.value("max-smtp-out") == 20
    assert hotmail.value("default-smtp-port") == 40025
    assert [r.max_smtp_out for r in hotmail.backoff_rules] == [5, 2]


def test_check_config_passes_on_the_demo_configuration(tmp_path: Path) -> None:
    path = tmp_path / "demo.conf"
    path.write_text(_demo_text(str(tmp_path)), "utf-8")
    assert sluice_main(["check-config", str(path)]) == 0


def test_demo_config_needs_a_listener_line() -> None:
    with pytest.raises(ValueError, match="smtp-listener"):
        demo_config_text(
            "# nothing\n", listen_port=1, dns=("127.0.0.1", 2), smtp_port=3, workdir="/x"
        )


def test_zones_point_every_demo_domain_at_its_receiver() -> None:
    specs = receivers(Story.PLAIN)
    table = zones(specs)
    for spec in specs:
        assert table[spec.hostname].a == (spec.host,)
        for domain in spec.domains:
            assert table[domain].mx == ((10, spec.hostname),)
    assert {s.name for s in specs} == {"microsoft", "gmail", "yahoo", "plain"}


def test_campaign_mix_is_fixed_and_every_recipient_unique() -> None:
    first = campaign(1000, dead_share=0.05)
    assert first == campaign(1000, dead_share=0.05)
    kinds = collections.Counter(m.kind for m in first)
    assert kinds[Kind.RESET] == 100
    assert len({m.rcpt for m in first}) == 1000
    assert {m.vmta for m in first if m.kind is Kind.RESET} == {"transactional"}
    assert {m.vmta for m in first if m.kind is Kind.NEWSLETTER} == {"marketing"}
    dead = [m for m in first if m.rcpt.startswith("t550-")]
    assert dead
    assert all(m.kind is Kind.NEWSLETTER for m in dead)
    domains = {m.domain for m in first}
    assert {"hotmail.com", "outlook.com", "live.com", "msn.com", "gmail.com"} <= domains
    assert not [m for m in campaign(500, dead_share=0.0) if m.rcpt.startswith("t550-")]


def test_campaign_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="negative"):
        campaign(-1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        campaign(10, dead_share=1.5)


def test_acct_tail_counts_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "acct.csv"
    tail = AcctTail(str(path))
    tail.poll()  # no file yet: nothing
    header = "type,timeLogged,orig,rcpt,queue\n"
    path.write_text(header + "r,t1,a@x,b@y,\nd,t2,a@x,b@y,y/m1\nd,t3,a@x,c@y,y/m")
    tail.poll()
    assert tail.received == 1
    assert tail.by_queue["y/m1"].delivered == 1
    assert "y/m" not in tail.by_queue  # the last line is not complete yet
    with path.open("a") as fh:
        fh.write('1\nb,t4,a@x,"d,@y",y/m1\nd,t5,,a@x,x/{default}\n')
    tail.poll()
    assert tail.by_queue["y/m1"].delivered == 2
    assert tail.by_queue["y/m1"].bounced == 1
    assert (tail.bounces, tail.dsn_finals) == (1, 1)


def test_help_lists_the_knobs() -> None:
    parser = argparse.ArgumentParser(prog="sluice demo")
    demo_cli.add_arguments(parser)
    text = parser.format_help()
    for knob in ("--messages", "--speed", "--concurrency", "--story", "--keep", "--no-live"):
        assert knob in text
    assert "--timeout" in text
    assert "--time-scale" in text
    args = parser.parse_args([])
    assert (args.messages, args.speed, args.story, args.timeout) == (2000, 0.0, "throttle", 110.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--story", "nope"])
