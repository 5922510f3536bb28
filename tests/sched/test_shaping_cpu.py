"""max-cpu-usage: smoothing and hysteresis of the CPU gate (samples passed in)."""

from __future__ import annotations

import pytest

from sluice.sched import CpuGate


def test_closes_at_the_limit_and_reopens_below_the_hysteresis_band() -> None:
    gate = CpuGate(90, smoothing=0)  # no smoothing: each sample counts alone
    assert gate.may_deliver
    assert gate.may_accept
    assert gate.sample(0.0, 0.85) is None
    assert gate.sample(1.0, 0.95) is True
    assert not gate.may_deliver
    assert not gate.may_accept
    assert gate.sample(2.0, 0.85) is None  # under 90 but not under 80: stays closed
    assert not gate.may_deliver
    assert gate.sample(3.0, 0.79) is False
    assert gate.may_deliver
    assert gate.may_accept
    assert gate.sample(4.0, 0.89) is None


def test_a_one_second_spike_does_not_close_the_gate() -> None:
    gate = CpuGate(90)
    for t in range(10):
        assert gate.sample(float(t), 0.5) is None
    assert gate.sample(10.0, 1.0) is None  # one busy second: the average moves ~18 points
    assert gate.load < 90
    changes = [gate.sample(float(t), 1.0) for t in range(11, 30)]
    assert True in changes  # sustained overload closes it within seconds
    assert changes.index(True) < 10


def test_samples_are_clamped_and_validated() -> None:
    gate = CpuGate(50, smoothing=0)
    gate.sample(0.0, 7.0)
    assert gate.load == 100.0
    gate.sample(1.0, -1.0)
    assert gate.load == 0.0
    for bad in (0, 101):
        with pytest.raises(ValueError, match="limit"):
            CpuGate(bad)
    with pytest.raises(ValueError, match="hysteresis"):
        CpuGate(90, hysteresis=-1)
