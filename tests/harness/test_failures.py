"""A failed scenario is a result: recorded in its raw file, listed first in the report and at
the end of ``run`` / ``report``, the rest still generated; exit codes and ``--strict``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from sobranie_bench.cli import main
from sobranie_bench.harness import results, runner
from sobranie_bench.harness.scenarios import PartContext, Scenario
from sobranie_bench.harness.scenarios.registry import registry
from sobranie_bench.report import build, failures, load, text
from tests.conftest import SECRET


async def _kill_the_server(ctx: PartContext) -> dict[str, Any]:
    """A scenario whose server dies under it: it SIGKILLs the `serve` process it talks to
    (the one of our descendants listening on the run's port)."""
    port = int(ctx.url.rsplit(":", 1)[1].strip("/"))

    def listens(proc: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            conns = getattr(proc, "net_connections", proc.connections)(kind="inet")
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)
        return False

    servers = [p for p in psutil.Process().children(recursive=True) if listens(p)]
    assert servers, "no server process to kill"
    for proc in servers:
        os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers) \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the event loop's child watcher sees the exit
    return {"histograms": {}, "counters": {}, "times": {}}


DIE = Scenario(name="die", doc="the server is killed during the run", part=_kill_the_server,
               metrics=lambda raw: {},
               grid={"ci": [{"connections": 1}]}, workers=False)


@pytest.fixture
def with_die(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "registry", lambda: {**registry(), "die": DIE})


@pytest.fixture
def run_with_a_death(with_die: None, tmp_path: Path) -> Path:
    out = tmp_path / "results"
    plan = runner.Plan(profile="ci", transports=("ws",), scenarios=("echo", "die"), out=out,
                       secret=SECRET, timing=(0.2, 0.5), tls=False)
    asyncio.run(runner.run_plan(plan))
    return out


def test_a_server_that_dies_is_a_failed_run_and_the_report_lists_it_first(
        run_with_a_death: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raws = {r["scenario"]: r for r in results.load_raw(run_with_a_death)}
    assert "error" not in raws["echo"] and raws["echo"]["counters"]["received"] > 0
    assert "died during the run" in raws["die"]["error"]
    (failure,) = failures.scenario_failures(raws.values())
    assert failure.what.startswith("ws die ")

    paths = build(run_with_a_death, with_charts=False)
    pages = ["comparison.md", "claims.md", "recommendation.md", "summary.md", "failures.md"]
    assert {run_with_a_death / page for page in pages} <= set(paths)
    for page in pages:
        lines = (run_with_a_death / page).read_text().splitlines()
        assert lines[0].startswith("# ")
        first = next(line for line in lines[1:] if line.strip())
        assert "1 failure" in first, page  # the failures come first, right under the title
        assert any("ws die" in line and "died during the run" in line for line in lines)
    # the rest was still generated: the echo figures are in the comparison
    p50 = load(run_with_a_death).figure("ws", "echo", "rtt_p50_us")
    assert p50 is not None
    assert text.ms(p50.value) in (run_with_a_death / "comparison.md").read_text()

    assert main(["report", "--results", str(run_with_a_death), "--no-charts"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("1 FAILURE") and "ws die" in err.splitlines()[1]
    assert main(["report", "--results", str(run_with_a_death), "--no-charts", "--strict"]) == 1

    only_failed = run_with_a_death.parent / "only-failed"
    for path in (run_with_a_death / "runs").rglob("ws-die-*.json"):
        (only_failed / "runs" / "x").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, only_failed / "runs" / "x" / path.name)
    assert main(["report", "--results", str(only_failed), "--no-charts"]) == 1  # nothing measured
    assert load(only_failed).raws


def test_run_exits_1_only_when_every_run_failed(with_die: None, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--transports", "ws", "--scenarios", "die", "--no-tls",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1 FAILURE" in err and "died during the run" in err
    assert failures.exit_code(nothing_measured=False, any_failure=True, strict=False) == 0
    assert failures.exit_code(nothing_measured=False, any_failure=True, strict=True) == 1
    assert failures.exit_code(nothing_measured=False, any_failure=False, strict=True) == 0


def bad_and_good(tmp_path: Path) -> tuple[Path, Path]:
    """Two notebooks: the first raises, the second prints."""
    bad, good = tmp_path / "01_bad.py", tmp_path / "02_good.py"
    header = ("# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n"
              "#     language: python\n#     name: python3\n# ---\n\n"
              "# %% tags=['parameters']\nRESULTS = 'results'\n\n")
    bad.write_text(header + "# %%\nraise ValueError('sse: no instances meet the SLO')\n")
    good.write_text(header + "# %%\nprint('fine')\n")
    return bad, good


def test_a_failed_notebook_is_recorded_and_the_next_one_runs(tmp_path: Path) -> None:
    from sobranie_bench.report.notebooks import execute_notebooks

    bad, good = bad_and_good(tmp_path)
    found: list[failures.Failure] = []
    written = execute_notebooks(tmp_path, tmp_path / "nb", notebooks=[bad, good], html=False,
                                failures=found)
    assert [p.name for p in written] == ["01_bad.ipynb", "02_good.ipynb"]
    (failure,) = found
    assert failure.kind == "notebook" and failure.what == "01_bad"
    assert "ValueError: sse: no instances meet the SLO" in failure.error
    failures.write_notebook_failures(tmp_path / "nb", found)
    assert failures.notebook_failures(tmp_path / "nb") == found


def test_notebooks_executing_beside_the_pages_still_open_every_page_with_their_failures(
        tmp_path: Path) -> None:
    """``report --notebooks``: the notebooks execute in the background while the pages are
    written; the pages wait for them before listing what failed."""
    from sobranie_bench.report.notebooks import start_notebooks

    results_dir = tmp_path / "results"
    (results_dir / "runs").mkdir(parents=True)
    waiting = start_notebooks(results_dir, results_dir / "notebooks",
                              notebooks=list(bad_and_good(tmp_path)))
    paths = build(results_dir, with_charts=False, notebooks=waiting)
    names = [p.name for p in paths]
    assert names[:5] == ["01_bad.ipynb", "01_bad.html", "02_good.ipynb", "02_good.html",
                         failures.NOTEBOOK_FAILURES]
    (failure,) = failures.notebook_failures(results_dir / "notebooks")
    assert failure.what == "01_bad"
    for page in ("comparison.md", "recommendation.md", "failures.md"):
        text = (results_dir / page).read_text()
        assert "1 failure" in text and "notebook 01_bad" in text, page
