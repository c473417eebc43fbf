"""Fixtures of the report tests: the committed fixture results (one ci-profile run of ws,
ws-websockets, sse and longpoll) and copies of its raw files that a test may alter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURE


@pytest.fixture(scope="session")
def summary() -> pd.DataFrame:
    """The fixture's summary.csv, read directly (the independent side of every check)."""
    return pd.read_csv(FIXTURE / "summary.csv", dtype={"params": str, "run_id": str})


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sobranie-bench report`` run once against the fixture (tables and charts)."""
    from sobranie_bench.cli import main

    out = tmp_path_factory.mktemp("report")
    assert main(["report", "--results", str(FIXTURE), "--out", str(out)]) == 0
    return out


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    """A results dir holding copies of the fixture's raw files (add more with add_raw)."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "runs", root / "runs")
    return root


def raw_file(transport: str, scenario: str, payload: int | None = None) -> dict[str, Any]:
    """One raw result of the fixture (the overhead scenario has two payloads)."""
    for path in sorted((FIXTURE / "runs").rglob(f"{transport}-{scenario}-*.json")):
        raw = json.loads(path.read_text())
        if raw["transport"] == transport and (payload is None
                                              or raw["params"].get("payload") == payload):
            return raw
    raise LookupError(f"no {transport} {scenario} raw in the fixture")


def add_raw(root: Path, raw: dict[str, Any], run_id: str) -> Path:
    """Write ``raw`` as part of run ``run_id`` under ``root/runs``."""
    from sobranie_bench.harness.results import write_raw

    raw = json.loads(json.dumps(raw))
    raw["metadata"]["run_id"] = run_id
    return write_raw(root / "runs" / run_id, raw)


def median(summary: pd.DataFrame, transport: str, scenario: str, metric: str,
           **params: float) -> float:
    """Median over trials of one metric in the fixture's summary (optionally at a payload)."""
    rows = summary[(summary.transport == transport) & (summary.scenario == scenario)
                   & (summary.metric == metric)]
    for key, value in params.items():
        rows = rows[rows.params.str.contains(f"{key}={value:g}(?:;|$)", regex=True)]
    assert not rows.empty, (transport, scenario, metric, params)
    return float(rows.value.median())
