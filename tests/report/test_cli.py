"""The ``report`` command: outputs, help, and no results."""

from __future__ import annotations

from pathlib import Path

import pytest

from sobranie_bench.cli import main


def test_report_writes_every_output(built: Path) -> None:
    for name in ("comparison.md", "claims.md", "recommendation.md"):
        assert (built / name).read_text().startswith("# "), name
    from sobranie_bench.report.charts import CHARTS
    pngs = {p.stem for p in (built / "charts").glob("*.png")}
    assert pngs == set(CHARTS) | {"network_loss"}  # the network section draws its own
    for name in ("README.md", "summary.md", "summary.ru.md"):
        assert (built / name).read_text().startswith("# "), name


def test_report_without_results_warns_and_says_not_measured(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    assert main(["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path),
                 "--no-charts"]) == 0
    assert "no raw results" in capsys.readouterr().err
    assert "not measured" in (tmp_path / "comparison.md").read_text()


def test_report_is_registered_in_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "--notebooks" in capsys.readouterr().out
