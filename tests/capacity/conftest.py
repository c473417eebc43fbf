"""Shared fixtures for the capacity-model tests: the fixture summary and its calibration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sobranie_bench.capacity.calibration import TransportCosts, calibrate
from sobranie_bench.harness.recorder import Recorder

SUMMARY = Path(__file__).resolve().parents[1] / "fixtures" / "capacity" / "summary.csv"


@pytest.fixture(scope="session")
def summary_path() -> Path:
    return SUMMARY


@pytest.fixture(scope="session")
def costs() -> dict[str, TransportCosts]:
    return calibrate(SUMMARY)


Raw = Callable[..., dict[str, Any]]


def histogram(*latencies_us: int) -> dict[str, Any]:
    rec = Recorder()
    for us in latencies_us:
        rec.record_ns(0, us * 1000)
    return rec.encoded()


def failover(jitter: bool, cluster: int = 3) -> dict[str, Any]:
    return {
        "version": 1, "transport": "ws", "scenario": "failover", "trial": 1,
        "metadata": {"cluster": cluster},
        "params": {"subscribers": 150, "rate": 40, "kill_after": 1.0, "jitter": jitter},
        "histograms": {"latency": histogram(2000, 3000)},
        "counters": {"acked": 120, "delivered": 18000, "lost": 0, "duplicated": 2,
                     "out_of_order": 0, "publish_failed": 0, "connect_failures": 0,
                     "cut_off": 50, "not_recovered": 0, "reconnects": 50},
        "series": {"recovery_s": [0.03, 0.08, 0.12]},
        "window": {"start": 0.0, "measure": 0.0, "end": 3.0},
    }


@pytest.fixture
def failover_raw() -> Raw:
    """A raw failover result of a 3-instance cluster (150 subscribers, 50 cut off)."""
    return failover
