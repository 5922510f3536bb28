"""Fixtures for the intake tests: ``harness`` and ``harness_factory`` (see intake_harness)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from intake_harness import Harness


@pytest.fixture
def harness_factory() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        h = Harness(**kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()
