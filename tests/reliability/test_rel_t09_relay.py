"""T09: ``sluice run`` is not an open relay for a client at 127.0.0.66.

Config: only 127.0.0.1 may relay (``<source 127.0.0.1> always-allow-relaying yes`` and
``<source 0/0> always-allow-relaying no``). From 127.0.0.66 every A3 address × every A3
sender, each in its own session, then DATA regardless: 0 RCPTs accepted (every reply a 5xx),
DATA never answered 354, and the spool empty afterwards. A control from 127.0.0.1 shows the
same probe accepts a relay RCPT from the trusted source. ``nmap --script smtp-open-relay``
runs when nmap is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.injectors import RawSmtpClient
from tests.reliability.rel_support import Daemon, read_spool, start_daemon

pytestmark = pytest.mark.interop

UNTRUSTED = "127.0.0.66"
#: Test plan §2, A3.
RCPTS = (
    "<v@ext.test>",
    "<v%ext.test@us.test>",
    "<v%ext.test@[127.0.0.1]>",
    "<ext.test!v>",
    "<ext.test!v@us.test>",
    "<@us.test:v@ext.test>",
    "<@us.test,@ext.test:v@ext.test>",
    '<"v@ext.test">',
    '<"v@ext.test"@us.test>',
    "<v@ext.test@us.test>",
    "<v@[127.0.0.3]>",
    "<v@ext.test.>",
    "<V@EXT.TEST>",
)
SENDERS = ("<>", "<postmaster@us.test>", "<x@ext.test>")


def _probe(d: Daemon, source: str, sender: str, rcpt: str) -> tuple[int, int, int]:
    """(MAIL code, RCPT code, DATA code) of one session."""
    with RawSmtpClient(d.host, d.port, timeout=10, source_address=(source, 0)) as c:
        if c.greeting.code != 220:
            return c.greeting.code, 0, 0
        c.ehlo("relaytest.example")
        mail = c.command(f"MAIL FROM:{sender}")
        to = c.command(f"RCPT TO:{rcpt}")
        data = c.command("DATA")
        if data.code == 354:
            c.send_raw(b"Subject: relayed\r\n\r\nrelay probe\r\n.\r\n")
            c.read_reply()
        c.quit()
        return mail.code, to.code, data.code


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp_path)
    yield d
    if d.proc.running:
        d.proc.stop()


def test_untrusted_client_relays_nothing(daemon: Daemon) -> None:
    results = {(s, r): _probe(daemon, UNTRUSTED, s, r) for s in SENDERS for r in RCPTS}
    accepted = [k for k, (_m, rc, _d) in results.items() if 200 <= rc < 300]
    data_open = [k for k, (_m, _rc, dc) in results.items() if dc == 354]
    codes = Counter(rc for _m, rc, _d in results.values())
    print(f"T09: {len(results)} probes from {UNTRUSTED}: RCPT replies {dict(codes)}")
    assert accepted == []
    assert data_open == []
    assert all(rc >= 500 for _m, rc, _d in results.values()), results
    # Control: the trusted source may relay to the same domain.
    _m, rc, _d = _probe(daemon, "127.0.0.1", "<postmaster@us.test>", "<v@ext.test>")
    assert rc == 250
    assert daemon.proc.stop() == 0
    stored = read_spool(daemon.spool).messages
    assert [env.sender for _, env, _ in stored] == ["postmaster@us.test"]  # the control only


def test_nmap_smtp_open_relay(daemon: Daemon) -> None:
    nmap = shutil.which("nmap")
    if nmap is None:
        pytest.skip("nmap is not installed")
    run = subprocess.run(
        [
            nmap,
            "-Pn",
            "-S",
            UNTRUSTED,
            "-e",
            "lo",
            "-p",
            str(daemon.port),
            "--script",
            "smtp-open-relay",
            "--script-args",
            "smtp-open-relay.domain=us.test,smtp-open-relay.ip=127.0.0.1",
            daemon.host,
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    print(run.stdout)
    assert run.returncode == 0
    assert "smtp-open-relay" in run.stdout
    assert not re.search(r"Server is an open relay \(\d+/\d+ tests\)", run.stdout)
    assert daemon.proc.stop() == 0
    assert read_spool(daemon.spool).messages == []
