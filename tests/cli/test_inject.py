"""``sluice inject``: CR/LF/NUL never reach the wire (T19, CLI half); messages arrive whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sluice.cli.main import main
from sluice.sim import ReceiverSpec, ThreadedCluster

BAD = ["a\r\nBcc: x@ext.test", "a\nb", "a\x00b"]


def _inject(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "inject", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize("option", ["--subject", "--from", "--to", "--header"])
def test_cr_lf_nul_are_refused_before_sending(
    option: str, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 9: had anything been sent, the exit status would be 1.
    args = {"--from": "a@x.test", "--to": "b@y.test", "--subject": "hi"}
    value = f"X-Tag: {bad}" if option == "--header" else bad
    args[option] = value
    flat = [item for pair in args.items() for item in pair]
    if option == "--header":
        flat += ["--header", value]
    # In-process: a NUL cannot travel in a real argv.
    status = main(["inject", "--server", "127.0.0.1:9", *flat])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "CR, LF or NUL" in err


def test_composed_message_arrives_with_its_headers() -> None:
    with ThreadedCluster([ReceiverSpec(name="sink", host="127.0.0.35")], record=True) as cl:
        host, port = cl.address("sink")
        run = _inject(
            "--server",
            f"{host}:{port}",
            "--from",
            "a@x.test",
            "--to",
            "b@y.test",
            "--subject",
            "password reset",
            "--header",
            "X-Campaign: 7",
            "--virtual-mta",
            "transactional",
            "--body",
            "hello\n.\nworld",
        )
        assert run.returncode == 0, run.stderr
        (entry,) = cl.ledger("sink").entries
    assert entry.mail_from == "a@x.test"
    assert entry.recipients == ("b@y.test",)
    assert entry.acknowledged
