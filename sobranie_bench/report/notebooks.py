"""Executing the notebooks (jupytext percent ``.py`` files in ``notebooks/``) with papermill
against a results directory, and exporting each executed notebook to HTML.

The ``.py`` file is the source: it is converted in memory and written next to its output, so a
stale paired ``.ipynb`` can never be what runs. Parameters override the notebook's cell tagged
``parameters``; the kernel is ``python3``, which jupyter_client starts with this interpreter
(the venv's), so the notebooks import the same ``sobranie_bench``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sobranie_bench.report.failures import Failure, write_notebook_failures

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NAME = re.compile(r"^\d\d_[a-z0-9_]+\.py$")
KERNEL = "python3"


def _cell_error(exc: Exception) -> str:
    """One line for a failed notebook: the cell's exception (papermill's ename / evalue)."""
    name, value = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if name:
        cell = getattr(exc, "exec_count", None)
        return f"{name}: {value}" + (f" (cell [{cell}])" if cell is not None else "")
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def sources(notebooks_dir: Path | str = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks, in order (``NN_name.py``)."""
    return sorted(p for p in Path(notebooks_dir).glob("*.py") if NAME.match(p.name))


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it (no machine paths in the
    executed notebooks' metadata)."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(
            path)
    except ValueError:
        return str(path)


JOBS = 2
"""Notebooks executed at once (each in a kernel of its own) when failures are collected."""


def execute_notebooks(results_dir: Path | str = "results",
                      out_dir: Path | str = "results/notebooks",
                      parameters: Mapping[str, Any] | None = None,
                      notebooks: Sequence[Path | str] | None = None,
                      kernel_name: str = KERNEL, html: bool = True,
                      timeout: float = 600.0,
                      failures: list[Failure] | None = None,
                      jobs: int = JOBS) -> list[Path]:
    """Run every notebook with ``RESULTS = results_dir`` (plus ``parameters``), writing the
    executed ``.ipynb`` and, with ``html``, an ``.html`` export to ``out_dir``; return the
    written paths, in the notebooks' order. A failing notebook raises papermill's
    PapermillExecutionError after its partial output is saved; given a ``failures`` list, it
    is appended there instead (its partial output exported too), the others run all the same,
    ``jobs`` of them at once (each in a process and a kernel of its own)."""
    todo = _todo(results_dir, out_dir, parameters, notebooks, kernel_name, html, timeout,
                 failures is not None)
    if failures is None or jobs <= 1 or len(todo) < 2:
        return _written([_execute(*args) for args in todo], failures)
    return _in_processes(todo, jobs, failures)()


def start_notebooks(results_dir: Path | str = "results",
                    out_dir: Path | str = "results/notebooks",
                    notebooks: Sequence[Path | str] | None = None,
                    jobs: int = JOBS) -> Callable[[], list[Path]]:
    """Every notebook executing in the background, ``jobs`` at once (each in a process and a
    kernel of its own), while this process goes on: ``sobranie-bench report`` writes its
    pages meanwhile. The function returned waits for them, records the failed ones in
    ``out_dir``'s failures.json (they open every page) and returns the written paths, in the
    notebooks' order, that file last."""
    failed: list[Failure] = []
    wait = _in_processes(_todo(results_dir, out_dir, None, notebooks, KERNEL, True, 600.0,
                               True), jobs, failed)
    return lambda: [*wait(), write_notebook_failures(out_dir, failed)]


_Todo = tuple[Path, Path, Mapping[str, Any], str, bool, float, bool]
_Done = tuple[list[Path], Failure | None]


def _todo(results_dir: Path | str, out_dir: Path | str, parameters: Mapping[str, Any] | None,
          notebooks: Sequence[Path | str] | None, kernel_name: str, html: bool, timeout: float,
          collect: bool) -> list[_Todo]:
    """:func:`_execute`'s arguments for each notebook (``out_dir`` made)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"RESULTS": str(results_dir), **(parameters or {})}
    return [(Path(p), out, params, kernel_name, html, timeout, collect)
            for p in (notebooks or sources())]


def _in_processes(todo: list[_Todo], jobs: int,
                  failures: list[Failure]) -> Callable[[], list[Path]]:
    """``todo`` submitted to ``jobs`` processes now; the function returned waits for them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max(1, min(jobs, len(todo))),
                               mp_context=multiprocessing.get_context("spawn"))
    # the longest first (by its last execution), so that no long one starts last
    order = sorted(range(len(todo)), key=lambda i: -_last_seconds(*todo[i][:2]))
    futures = {i: pool.submit(_execute, *todo[i]) for i in order}

    def wait() -> list[Path]:
        with pool:
            return _written([futures[i].result() for i in range(len(todo))], failures)

    return wait


def _last_seconds(source: Path, out: Path) -> float:
    """How long ``source`` took when it was last executed into ``out`` (papermill records it
    in the notebook); 0 when it never was."""
    try:
        executed = json.loads((out / f"{source.stem}.ipynb").read_text())
        return float(executed["metadata"]["papermill"]["duration"] or 0.0)
    except (OSError, ValueError, TypeError, KeyError):
        return 0.0


def _written(done: list[_Done], failures: list[Failure] | None) -> list[Path]:
    written: list[Path] = []
    for paths, failure in done:
        written += paths
        if failure is not None and failures is not None:
            failures.append(failure)
    return written


def _execute(source: Path, out: Path, params: Mapping[str, Any], kernel_name: str, html: bool,
             timeout: float, collect: bool) -> tuple[list[Path], Failure | None]:
    """One notebook executed (and exported): its written paths, and its failure when
    ``collect`` (else the failure is raised)."""
    import jupytext
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    target = out / f"{source.stem}.ipynb"
    nbformat.write(jupytext.read(source), target)
    failure = None
    try:
        executed = papermill.execute_notebook(
            _shown(target), _shown(target), parameters=dict(params), kernel_name=kernel_name,
            progress_bar=False, execution_timeout=timeout, cwd=None)
    except Exception as exc:  # recorded when the caller collects failures
        if not collect:
            raise
        failure = Failure("notebook", source.stem, _cell_error(exc))
        executed = nbformat.read(target, as_version=4)
    written = [target]
    if html:
        body, _ = HTMLExporter().from_notebook_node(executed)
        page = target.with_suffix(".html")
        page.write_text(body)
        written.append(page)
    return written, failure
