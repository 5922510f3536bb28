"""Fixtures of the end-to-end harness (helpers in tests/e2e/*.py; usage in test_harness.py).

e2e_dir            a 0755 temp dir (peers that drop privileges can use it); removed after
e2e_port           one TCP port free on every receiver address (RECEIVER_ADDRS)
dns_server         DnsTestServer serving e2e_zones() on 127.0.0.1:<udp port>; .address,
                   .zones (mutable while running), .queries
ledger             Ledger writing e2e_dir/ledger.csv
postfix_factory    make(**PostfixReceiver kwargs) -> started PostfixReceiver (port=e2e_port)
postfix_receiver   Postfix on 127.0.0.2:e2e_port for ok.test and nomx.test
smtp_sink_factory  make(host, **SmtpSink kwargs) -> started SmtpSink (port=e2e_port)
smtp_sink          smtp-sink -D on 127.0.0.3:e2e_port (sink.test)
sluice_listener    ("127.0.0.1", free port) for Sluice's smtp-listener
sluice_config      write(**write_sluice_config kwargs) -> Path, wired to the fixtures above
sluice_factory     make(config, **SluiceProcess kwargs) -> started SluiceProcess
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.dnszones import ALL_RECEIVER_ADDRS, RECEIVER_ADDRS, DnsTestServer, run_e2e_dns
from tests.e2e.ledger import Ledger
from tests.e2e.peers import SmtpSink, free_port, free_port_on_all, make_world_dir
from tests.e2e.postfix_peer import PostfixReceiver
from tests.e2e.sluice_config import write_sluice_config
from tests.e2e.sluice_proc import SluiceProcess


@pytest.fixture
def e2e_dir() -> Iterator[Path]:
    path = make_world_dir("sluice-e2e-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def e2e_port() -> int:
    return free_port_on_all(ALL_RECEIVER_ADDRS)


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    with run_e2e_dns() as server:
        yield server


@pytest.fixture
def ledger(e2e_dir: Path) -> Iterator[Ledger]:
    led = Ledger(path=e2e_dir / "ledger.csv")
    yield led
    led.close()


@pytest.fixture
def postfix_factory(e2e_dir: Path, e2e_port: int) -> Iterator[Callable[..., PostfixReceiver]]:
    made: list[PostfixReceiver] = []

    def make(**kwargs: Any) -> PostfixReceiver:
        kwargs.setdefault("port", e2e_port)
        receiver = PostfixReceiver(e2e_dir, **kwargs)
        made.append(receiver)
        return receiver.start()

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def postfix_receiver(postfix_factory: Callable[..., PostfixReceiver]) -> PostfixReceiver:
    return postfix_factory(host=RECEIVER_ADDRS["ok"], domains=("ok.test", "nomx.test"))


@pytest.fixture
def smtp_sink_factory(e2e_dir: Path, e2e_port: int) -> Iterator[Callable[..., SmtpSink]]:
    made: list[SmtpSink] = []

    def make(host: str = RECEIVER_ADDRS["sink"], **kwargs: Any) -> SmtpSink:
        kwargs.setdefault("port", e2e_port)
        sink = SmtpSink(e2e_dir, host=host, **kwargs)
        made.append(sink)
        return sink.start()

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def smtp_sink(smtp_sink_factory: Callable[..., SmtpSink]) -> SmtpSink:
    return smtp_sink_factory(RECEIVER_ADDRS["sink"])


@pytest.fixture
def sluice_listener() -> tuple[str, int]:
    return ("127.0.0.1", free_port("127.0.0.1"))


@pytest.fixture
def sluice_config(
    e2e_dir: Path, e2e_port: int, dns_server: DnsTestServer, sluice_listener: tuple[str, int]
) -> Callable[..., Path]:
    def write(**kwargs: Any) -> Path:
        kwargs.setdefault("listener", sluice_listener)
        kwargs.setdefault("dns_server", dns_server.address)
        kwargs.setdefault("smtp_port", e2e_port)
        return write_sluice_config(e2e_dir / "sluice", **kwargs)

    return write


@pytest.fixture
def sluice_factory(e2e_dir: Path) -> Iterator[Callable[..., SluiceProcess]]:
    made: list[SluiceProcess] = []

    def make(config: Path, **kwargs: Any) -> SluiceProcess:
        kwargs.setdefault("workdir", e2e_dir / f"sluice-run-{len(made)}")
        proc = SluiceProcess(config, **kwargs)
        made.append(proc)
        return proc.start()

    yield make
    for p in made:
        if p.proc is not None:
            p.stop(5.0)
