"""Fixtures of the management tests: ``mgmt`` and ``mgmt_factory`` (see mgmt_harness), and
tests/e2e's fixtures (dns_server, smtp_sink, sluice_config, sluice_factory, ...) for the
end-to-end test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mgmt_harness import MgmtHarness
from tests.e2e.conftest import (  # noqa: F401  (fixtures, used by name)
    dns_server,
    e2e_dir,
    e2e_port,
    sluice_config,
    sluice_factory,
    sluice_listener,
    smtp_sink,
    smtp_sink_factory,
)


@pytest.fixture
def mgmt_factory(tmp_path: Path) -> Iterator[Callable[..., MgmtHarness]]:
    made: list[MgmtHarness] = []

    def make(**kwargs: Any) -> MgmtHarness:
        workdir = tmp_path / f"h{len(made)}"
        workdir.mkdir()
        h = MgmtHarness(workdir, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def mgmt(mgmt_factory: Callable[..., MgmtHarness]) -> MgmtHarness:
    return mgmt_factory()
