"""``sobranie-bench report``: the comparison table, the note's claims checked, the
recommendation and the charts, from the raw results; optionally the executed notebooks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console


def _report(args: argparse.Namespace) -> int:
    from sobranie_bench.report import build, failures, load

    console = Console(stderr=True)
    results = Path(args.results)
    out = Path(args.out) if args.out else results
    res = load(results)
    if res.empty:
        console.print(f"[yellow]warning:[/] no raw results under {results}/runs: every table "
                      "will say 'not measured' (run `sobranie-bench run` first)")
    paths: list[Path] = []
    notebooks = None
    if args.notebooks or args.only_notebooks:  # in the background while the pages are written
        from sobranie_bench.report.notebooks import start_notebooks
        notebooks = start_notebooks(results, out / "notebooks")
    if not args.only_notebooks:
        if args.docs:
            from sobranie_bench.report import docs
            paths += docs.refresh(args.docs, res)
        paths += build(results, out, with_charts=not args.no_charts, res=res,
                       notebooks=notebooks)
    else:
        from sobranie_bench.report import summary
        assert notebooks is not None
        paths += [*notebooks(), summary.write_index(res, out)]
    everything = failures.collect(res, out / "notebooks")
    for line in failures.console_lines(everything):  # what failed comes first
        console.print(f"[red]{line}[/]", highlight=False)
    if not args.only_notebooks:
        console.print(f"report from run {res.main_run or '(none)'}"
                      + (f" ({res.ignored} raw files of older runs left out)"
                         if res.ignored else ""))
    for path in paths:
        print(path)
    attempted = bool(res.raws) or bool(res.scaleout)
    return failures.exit_code(attempted and not measured_anything(res), bool(everything), args.strict)


def measured_anything(res: Any) -> bool:
    """Whether any run (one instance or scale-out) produced figures."""
    return bool(res.with_figures) or any(s.with_figures for s in res.scaleout.values())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="write the comparison, claims, recommendation and charts",
        description="From the raw results under RESULTS/runs (newest run per transport x "
                    "scenario) write OUT/comparison.md (the note's table, its stars beside "
                    "ours), OUT/claims.md (every claim of the note with a verdict and its "
                    "evidence), OUT/recommendation.md (a transport per Sobranie feature, its "
                    "cost at 1M online from the capacity model) and OUT/charts/*.png|svg. "
                    "With --notebooks, also execute notebooks/*.py into OUT/notebooks "
                    "(.ipynb and .html). docs/report.md explains how to read it.")
    p.add_argument("--results", default="results",
                   help="results root holding runs/<run-id>/ (default results)")
    p.add_argument("--out", help="where to write (default: the results root)")
    p.add_argument("--notebooks", action="store_true",
                   help="also execute the notebooks into OUT/notebooks (papermill + HTML)")
    p.add_argument("--only-notebooks", action="store_true",
                   help="only execute the notebooks (the tables and charts are left as they are)")
    p.add_argument("--no-charts", action="store_true", help="skip the charts")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any scenario or notebook failed (default: 0 whenever "
                        "the report was produced, the failures listed at its top; 1 only "
                        "when nothing could be measured)")
    p.add_argument("--docs", metavar="DIR",
                   help="also rewrite the generated figure blocks of DIR/*.md from these "
                        "results (`<!-- generated: NAME -->`; make bench passes docs)")
    p.set_defaults(func=_report)
