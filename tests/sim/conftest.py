"""Fixtures for the simulator tests: ``sim`` starts receivers in a background thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sluice.sim import Faults, Profile, ReceiverSpec, ThreadedCluster


@pytest.fixture
def sim() -> Iterator[Callable[..., ThreadedCluster]]:
    """``sim(profile=None, faults=None, host="127.0.0.20", **cluster_options)`` → a running
    one-receiver ThreadedCluster named "mx", stopped at teardown."""
    made: list[ThreadedCluster] = []

    def start(
        profile: Profile | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.20",
        **options: Any,
    ) -> ThreadedCluster:
        spec = ReceiverSpec(name="mx", host=host, profile=profile, faults=faults)
        tc = ThreadedCluster([spec], **options).start()
        made.append(tc)
        return tc

    yield start
    for tc in made:
        tc.stop()
