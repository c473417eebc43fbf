"""Shared fixtures for the capacity-model tests: the fixture summary and its calibration."""

from __future__ import annotations

from pathlib import Path

import pytest

from sobranie_bench.capacity.calibration import TransportCosts, calibrate

SUMMARY = Path(__file__).resolve().parents[1] / "fixtures" / "capacity" / "summary.csv"


@pytest.fixture(scope="session")
def summary_path() -> Path:
    return SUMMARY


@pytest.fixture(scope="session")
def costs() -> dict[str, TransportCosts]:
    return calibrate(SUMMARY)
