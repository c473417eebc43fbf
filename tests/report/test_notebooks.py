"""Every notebook executes (papermill) against the fixture results with a parameters override,
and its paired .ipynb holds the same cells as its .py source."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

from sobranie_bench.report.notebooks import execute_notebooks, sources

NOTEBOOKS = sources()


def test_there_are_eight_notebooks() -> None:
    assert [p.stem[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 9)]


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_ipynb_matches_its_py(source: Path) -> None:
    py = jupytext.read(source)
    ipynb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert [(c.cell_type, c.source) for c in py.cells] == [
        (c.cell_type, c.source) for c in ipynb.cells], "run `jupytext --sync notebooks/*.py`"
    tagged = [c for c in py.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "RESULTS = " in tagged[0].source


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_against_the_fixture(source: Path, fixture_dir: Path,
                                               tmp_path: Path) -> None:
    extra = {"SCALING_USERS": [100_000], "SIM_SECONDS": 60.0} if "capacity" in source.stem \
        else {}
    written = execute_notebooks(fixture_dir, tmp_path, parameters=extra, notebooks=[source])
    executed = nbformat.read(tmp_path / f"{source.stem}.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no chart shown"
    assert not any("<Figure size" in o.get("data", {}).get("text/plain", "") for o in outputs
                   if "image/png" not in o.get("data", {})), "a chart shown as its repr"
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and str(fixture_dir) in injected[0].source
    assert (tmp_path / f"{source.stem}.html").read_text().startswith("<!DOCTYPE html>")
    assert len(written) == 2
