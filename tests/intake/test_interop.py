"""Real injectors nobody here wrote: swaks and Postfix's smtp-source (T09, T12, T13)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest
from intake_harness import UNTRUSTED, Harness

from sluice.intake.policy import SourcePolicy, SourcePolicyMap

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (shutil.which("swaks") and shutil.which("smtp-source")), reason="needs swaks, postfix"
    ),
]


def _swaks(port: int, *args: str, source: str = "127.0.0.1") -> subprocess.CompletedProcess[str]:
    cmd = [
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(port),
        "--local-interface",
        source,
        "--helo",
        "swaks.test",
        "--timeout",
        "10",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def test_swaks_delivers_with_header_edits(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(
        always_allow_relaying=True,
        process_x_virtual_mta=True,
        process_x_job=True,
        hide_message_source=True,
    )
    h = harness_factory(
        policies=SourcePolicyMap([("127.0.0.1", policy)]), known_vmtas=frozenset({"v1"})
    )
    run = _swaks(
        h.port,
        "--from",
        "a@x.test",
        "--to",
        "b@sink.test",
        "--add-header",
        "X-Virtual-MTA: v1",
        "--add-header",
        "X-Job: campaign-9",
    )
    assert run.returncode == 0, run.stdout
    assert "queued as 1" in run.stdout
    [(env, data)] = h.messages()
    assert (env.vmta, env.job_id, env.source_helo) == ("v1", "campaign-9", "swaks.test")
    assert data.startswith(b"Received: by mta.test with ESMTP\r\n\tfor <b@sink.test>;")
    assert b"127.0.0.1" not in data.split(b"\r\n\r\n", 1)[0]
    assert b"X-Virtual-MTA" not in data
    assert b"X-Job" not in data
    assert h.queues.queues == {"sink.test/v1": [(1, 0)]}


def test_swaks_pipeline_control_delivers_one(harness: Harness) -> None:
    run = _swaks(harness.port, "--pipeline", "--from", "a@x.test", "--to", "b@sink.test")
    assert run.returncode == 0, run.stdout
    assert len(harness.messages()) == 1


def test_swaks_recipient_limit(harness_factory: Callable[..., Harness]) -> None:
    policy = SourcePolicy(always_allow_relaying=True, max_rcpt_per_message=3)
    h = harness_factory(policies=SourcePolicyMap([("127.0.0.1", policy)]))
    rcpts = ",".join(f"r{i}@sink.test" for i in range(4))
    run = _swaks(h.port, "--from", "a@x.test", "--to", rcpts)
    assert "452 4.5.3" in run.stdout
    [(env, _)] = h.messages()
    assert len(env.recipients) == 3


def test_swaks_untrusted_is_not_relayed(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(policies=SourcePolicyMap([(UNTRUSTED, SourcePolicy())]))
    run = _swaks(h.port, "--from", "a@x.test", "--to", "v@ext.test", source=UNTRUSTED)
    assert run.returncode != 0
    assert "550 5.7.1" in run.stdout
    assert h.messages() == []


@pytest.mark.parametrize("reuse", [False, True])
def test_smtp_source_messages_all_stored(harness: Harness, reuse: bool) -> None:
    n = 200
    cmd = ["smtp-source", "-s", "5", "-m", str(n), "-l", "2000"]
    if reuse:
        cmd.append("-d")
    cmd += ["-f", "a@x.test", "-t", "b@sink.test", f"127.0.0.1:{harness.port}"]
    subprocess.run(cmd, check=True, timeout=60)
    msgs = harness.messages()
    assert len(msgs) == n
    assert {env.recipients[0].address for env, _ in msgs} == {"b@sink.test"}
    assert harness.queues.count() == n
