"""The report: the note's comparison table against our measurements, its claims checked, a
recommendation per Sobranie feature, charts, and the notebooks that tell the story.

Everything is computed from the raw results (``results/runs/<run-id>/*.json``), newest run per
transport x scenario; see ``docs/report.md`` for how to read it and regenerate it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sobranie_bench.report.data import Results, load

__all__ = ["Results", "build", "load"]


def build(results_dir: Path | str = "results", out_dir: Path | str | None = None,
          with_charts: bool = True, res: Results | None = None,
          notebooks: Callable[[], list[Path]] | None = None) -> list[Path]:
    """Write comparison.md, claims.md, recommendation.md, summary.md, summary.ru.md,
    failures.md (and charts/) and the network section, then the index README.md, from the raw
    results under ``results_dir`` into ``out_dir`` (default: ``results_dir``); return the
    paths. What failed (scenarios, and notebooks executed into ``out_dir/notebooks``) opens
    every page. ``res``: the results of ``results_dir`` already loaded (what is computed from
    them once, such as the recommendation's costing, is then shared with the caller).
    ``notebooks``: waits for the notebooks executing meanwhile
    (:func:`~sobranie_bench.report.notebooks.start_notebooks`) and returns their paths; it is
    called once the pages are written, before the failures are collected (theirs too)."""
    from sobranie_bench.report import (
        charts,
        claims,
        comparison,
        failures,
        network,
        recommendation,
        summary,
    )

    res = res if res is not None else load(results_dir)
    out = Path(out_dir) if out_dir is not None else Path(results_dir)
    paths = [comparison.write(res, out), claims.write(res, out), recommendation.write(res, out),
             *summary.write(res, out)]
    more = charts.write_all(res, out / "charts") if with_charts else []
    more += network.write(Path(results_dir), out, with_charts, res)
    executed = notebooks() if notebooks is not None else []
    failed = failures.collect(res, out / "notebooks")
    for page in paths:  # what failed opens every page
        failures.insert_banner(page, failed)
    return [*executed, *paths, failures.write(failed, out), *more,
            summary.write_index(res, out)]
