"""Fixtures of the delivery end-to-end tests, built on the tests/e2e harness.

Re-exported from tests/e2e/conftest.py (see its docstring): e2e_dir, dns_server, ledger,
postfix_factory, postfix_receiver, smtp_sink_factory, smtp_sink, sluice_config,
sluice_factory, sluice_listener.

Overridden / added here:
    e2e_port      one port free on every receiver address *and* on 127.0.0.1 and the extra
                  addresses of dlv_e2e_support.EXTRA_ADDRS, so Sluice itself can listen on
                  127.0.0.1:e2e_port (loop.test) and extra receivers share the port
    world         a dlv_e2e_support.World bundling the fixtures above
    syn_counter   a started SynCounter (AF_PACKET on lo; needs root, skips otherwise)
    src_receiver  a Postfix on 127.0.0.11 for src.test, where DSNs to ledger@src.test land
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.delivery_e2e.dlv_e2e_support import (
    EXTRA_ADDRS,
    SRC_DOMAIN,
    SynCounter,
    World,
    add_zone,
)
from tests.e2e.conftest import (  # noqa: F401  (fixtures, used by name)
    dns_server,
    e2e_dir,
    ledger,
    postfix_factory,
    postfix_receiver,
    sluice_config,
    sluice_factory,
    sluice_listener,
    smtp_sink,
    smtp_sink_factory,
)
from tests.e2e.dnszones import ALL_RECEIVER_ADDRS
from tests.e2e.peers import free_port_on_all
from tests.e2e.postfix_peer import PostfixReceiver


@pytest.fixture
def e2e_port() -> int:
    return free_port_on_all((*ALL_RECEIVER_ADDRS, "127.0.0.1", *EXTRA_ADDRS.values()))


@pytest.fixture
def world(request: pytest.FixtureRequest) -> World:
    get = request.getfixturevalue
    return World(
        dir=get("e2e_dir"),
        port=get("e2e_port"),
        dns=get("dns_server"),
        ledger=get("ledger"),
        listener=get("sluice_listener"),
        write_config=get("sluice_config"),
        make_sluice=get("sluice_factory"),
        make_sink=get("smtp_sink_factory"),
        make_postfix=get("postfix_factory"),
    )


@pytest.fixture
def syn_counter() -> Iterator[SynCounter]:
    counter = SynCounter()
    try:
        counter.start()
    except PermissionError:
        pytest.skip("counting SYNs needs CAP_NET_RAW (AF_PACKET on lo)")
    yield counter
    counter.stop()


@pytest.fixture
def src_receiver(world: World) -> PostfixReceiver:
    """Postfix for the ledger's sender domain: the DSNs Sluice sends arrive here."""
    add_zone(world.dns, SRC_DOMAIN, EXTRA_ADDRS["src"])
    return world.make_postfix(
        host=EXTRA_ADDRS["src"], domains=(SRC_DOMAIN,), hostname=f"mx.{SRC_DOMAIN}"
    )
