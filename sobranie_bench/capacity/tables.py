"""What a calibration shows, as plain tables: fitted costs, residuals, the held-out validation.

One place builds the rows; the CLI (``capacity validate --against``, ``capacity calibrate``),
the report and notebook 07 print them. :func:`calibration_tables` reads a results root of
``capacity calibrate`` (``results/calibrate`` by default) and returns the tables, or None when
there is no calibration there; :func:`calibrated_plan` plans with the fitted costs and puts
bootstrap error bars on the process counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sobranie_bench.capacity import fit as fitting
from sobranie_bench.capacity.calibration import TransportCosts
from sobranie_bench.capacity.clustercheck import TOLERANCES
from sobranie_bench.capacity.errors import fitted_costs, measured_knees, with_error_bars
from sobranie_bench.capacity.fit import (
    MAX_RUN_QUEUE_WAIT,
    RANDOM_SEED,
    CalibrationRefused,
    Fit,
    Linear,
)
from sobranie_bench.capacity.fleet import Plan, plan
from sobranie_bench.capacity.measure import DEFAULT_OUT, HOST_FILE
from sobranie_bench.capacity.reality import (
    CPU_TOLERANCE,
    KNEE_TOLERANCE,
    P95_FACTOR,
    Validation,
    validate_against,
)

COST_HEADERS = ("transport", "fixed cores (fan-out / echo)", "µs / inbound", "µs / delivery",
                "delivery cost over load", "harness µs / inbound", "harness µs / delivery",
                "refused trials")  # fmt: skip
RESIDUAL_HEADERS = ("transport", "point", "trials", "measured cores", "fitted", "residual",
                    "trial residuals", "line residual")  # fmt: skip
VALIDATION_HEADERS = ("transport", "point", "figure", "predicted", "measured", "error",
                      "threshold", "pass", "note")  # fmt: skip
THRESHOLDS = (f"CPU within ±{CPU_TOLERANCE:.0%}, p95 within {P95_FACTOR:g}x below the knee, "
              f"knee within ±{KNEE_TOLERANCE:.0%}")  # fmt: skip


@dataclass(frozen=True)
class CalibrationTables:
    """A calibration's fit and held-out validation, as rows of strings."""

    host: str
    """The machine during the measurement: CPU, cores, load average before and after."""
    costs: tuple[tuple[str, ...], ...]
    """Per transport (``COST_HEADERS``): fitted costs with their 90% bootstrap interval."""
    residuals: tuple[tuple[str, ...], ...]
    """Per fit point (``RESIDUAL_HEADERS``): measured mean cores against the fit."""
    validation: tuple[tuple[str, ...], ...]
    """Per held-out point and figure (``VALIDATION_HEADERS``)."""
    verdicts: dict[str, bool]
    """Transport -> whether every held-out check with a threshold passed."""
    refused: dict[str, str]
    """Transport -> why its calibration was refused (the machine was busy)."""


def cell(value: object) -> str:
    """A number as the tables print it: thousands separated, three significant digits."""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def host_text(host: Mapping[str, Any]) -> str:
    """``AMD EPYC, 2 cores, load average 1.2 before, 3.4 after (quick: 8 s trials)``."""
    before, after = host.get("before", {}), host.get("after", {})
    if not before:
        return "host not recorded"
    text = (f"{before.get('cpu')}, {before.get('cores')} cores, load average "
            f"{before.get('loadavg', [0])[0]:.2f} before, "
            f"{after.get('loadavg', [0])[0]:.2f} after")  # fmt: skip
    return text + (" (quick: 8 s trials)" if host.get("quick") else " (30 s trials)")


def _cost_row(transport: str, fit: Fit) -> tuple[str, ...]:
    def ci(attribute: str, scale: float) -> str:
        low, high = fit.interval(attribute)
        value = getattr(fit.server, attribute) * scale
        return f"{value:.3g} [{low * scale:.3g}, {high * scale:.3g}]"

    h = fit.harness
    return (transport, f"{ci('idle', 1.0)} / {fit.server.fixed_for('echo'):.3g}",
            ci("inbound_s", 1e6), ci("delivery_s", 1e6), curve_text(fit.server),
            "-" if h is None else f"{h.inbound_s * 1e6:.3g}",
            "-" if h is None else f"{h.delivery_s * 1e6:.3g}", str(len(fit.refused)))  # fmt: skip


def curve_text(model: Linear) -> str:
    """``fanout x0.99-1.02 over 2,000-16,000/s``: per scenario, the range of the factor on the
    line's delivery cost over the loads its fit points measured (``constant``: no curve)."""
    parts = []
    for scenario, curve in model.curves:
        factors = [f for _, f in curve]
        parts.append(f"{scenario} x{min(factors):.2f}-{max(factors):.2f} over "
                     f"{curve[0][0]:,.0f}-{curve[-1][0]:,.0f}/s")  # fmt: skip
    return "; ".join(parts) or "constant"


def validation_rows(result: Validation) -> tuple[tuple[str, ...], ...]:
    """Predicted / measured / error / pass per held-out point and figure."""
    rows = []
    for c in result.checks:
        verdict = {True: "pass", False: "FAIL", None: ""}[c.passed]
        note = ", ".join(filter(None, ["extrapolation" if c.extrapolation else "", c.note]))
        rows.append((c.transport, c.point, c.metric,
                     "saturated" if c.predicted is None else cell(c.predicted), cell(c.measured),
                     "-" if c.error is None else f"{c.error:+.0%}", c.threshold, verdict,
                     note))  # fmt: skip
    return tuple(rows)


def tables(
    fits: Mapping[str, Fit | CalibrationRefused], result: Validation, host: Mapping[str, Any]
) -> CalibrationTables:
    """The tables of fitted ``fits`` and their validation ``result``."""
    costs: list[tuple[str, ...]] = []
    residuals: list[tuple[str, ...]] = []
    for transport, fit in sorted(fits.items()):
        if isinstance(fit, CalibrationRefused):
            costs.append((transport, "refused (why: below the tables)",
                          *("" for _ in COST_HEADERS[2:])))
            continue
        costs.append(_cost_row(transport, fit))
        for r in fit.residuals:
            low, high = r.spread
            residuals.append((transport, f"{r.scenario} {r.params}", str(r.trials),
                              f"{r.measured_cores:.3f}", f"{r.fitted_cores:.3f}",
                              f"{r.error:+.1%}", f"{low:+.0%} to {high:+.0%}",
                              "-" if r.line_error is None else f"{r.line_error:+.1%}"))  # fmt: skip
    return CalibrationTables(
        host=host_text(host),
        costs=tuple(costs),
        residuals=tuple(residuals),
        validation=validation_rows(result),
        verdicts={t: result.passed(t) for t in fits},
        refused=dict(result.refused),
    )


def load(
    root: Path | str = DEFAULT_OUT, max_wait: float = MAX_RUN_QUEUE_WAIT, seed: int = RANDOM_SEED
) -> tuple[list[fitting.Trial], dict[str, Fit | CalibrationRefused], dict[str, Any]] | None:
    """A calibration's trials, fits (or refusals) and host record; None when ``root`` holds
    no fit trials. With a host record, only the runs it names (the last calibration)."""
    root = Path(root)
    if not root.is_dir():
        return None
    host_file = root / HOST_FILE
    host = json.loads(host_file.read_text()) if host_file.exists() else {}
    named = [host.get("fit_run"), *host.get("fit_runs", []), host.get("holdout_run"),
             *host.get("holdout_runs", [])]  # older records: one fit run, one held-out run
    runs = [root / "runs" / name for name in named if name]
    if runs and all(run.is_dir() for run in runs):  # the last calibration's runs only
        trials = [t for run in runs for t in fitting.load_trials(run)]
    else:
        trials = fitting.load_trials(root)
    fits = fitting.fit_all(trials, max_wait, seed=seed)
    if not fits:
        return None
    return trials, fits, host


def calibration_tables(root: Path | str = DEFAULT_OUT) -> CalibrationTables | None:
    """The fit and validation tables of the calibration under ``root`` (None: none there)."""
    loaded = load(root)
    if loaded is None:
        return None
    trials, fits, host = loaded
    return tables(fits, validate_against(trials, fits), host)


def calibrated_plan(
    costs: Mapping[str, TransportCosts],
    root: Path | str = DEFAULT_OUT,
    transports: Sequence[str] | None = None,
    **kwargs: Any,
) -> tuple[Plan, dict[str, TransportCosts], list[str]]:
    """:func:`~sobranie_bench.capacity.fleet.plan` with the costs fitted under ``root``
    (CPU per message and delivery, the measured knee as a hard limit) and bootstrap error
    bars on the process counts; the costs it used; and notes (refused calibrations, none
    found). ``kwargs`` go to ``plan``."""
    loaded = load(root)
    notes: list[str] = []
    if loaded is None:
        kwargs.setdefault("calibration", "the summary's medians")
        notes.append(f"no calibration under {Path(root).name}: no error bars (run `make "
                     "calibrate`)")  # fmt: skip
        return plan(costs=costs, transports=transports, **kwargs), dict(costs), notes
    trials, all_fits, _ = loaded
    calibration = kwargs.pop("calibration", "the summary's medians")
    fits = {t: f for t, f in all_fits.items() if isinstance(f, Fit)}
    notes += [str(f) for f in all_fits.values() if isinstance(f, CalibrationRefused)]
    knees = measured_knees(trials)
    fitted = fitted_costs(fits, costs, knees)
    result = plan(costs=fitted, transports=transports,
                  calibration=f"{calibration}; CPU and knee fitted in `capacity calibrate` "
                  f"({', '.join(sorted(fits)) or 'nothing fitted'})", **kwargs)  # fmt: skip
    return with_error_bars(result, fitted, fits, knees), fitted, notes


CLUSTER_CAPTION = ("the fleet and storm models' predictions for the same N and load beside "
                   f"a measured cluster run, judged: {TOLERANCES}; error: predicted / "
                   "measured - 1")


def cluster_rows(run: Path | str | None, summary: Path | str | None = None
                 ) -> tuple[tuple[str, ...], ...]:  # fmt: skip
    """The fleet model against the cluster results under ``run`` (``VALIDATION_HEADERS``);
    the connect capacity from ``summary``'s connection costs when it exists. Empty without
    a cluster result there."""
    from sobranie_bench.capacity.calibration import calibrate
    from sobranie_bench.capacity.clustercheck import cluster_checks, load_cluster

    if run is None or not Path(run).exists():
        return ()
    costs = calibrate(summary) if summary is not None and Path(summary).exists() else None
    checks = cluster_checks(load_cluster(run), costs)
    return validation_rows(Validation(tuple(checks), {}))


def cluster_verdicts(rows: Sequence[Sequence[str]]) -> dict[str, bool]:
    """Transport -> whether every judged cluster row (``cluster_rows``) passed; a transport
    with no judged row has no verdict."""
    judged: dict[str, list[bool]] = {}
    for row in rows:
        if row[7] in ("pass", "FAIL"):
            judged.setdefault(row[0], []).append(row[7] == "pass")
    return {transport: all(ok) for transport, ok in sorted(judged.items())}


def verdict_text(verdicts: Mapping[str, bool]) -> str:
    """``sse: **PASS**; ws: **FAIL**``."""
    return "; ".join(f"{t}: **{'PASS' if ok else 'FAIL'}**" for t, ok in verdicts.items())


def validation_markdown(
    root: Path | str, table: Callable[[Sequence[str], Sequence[Sequence[str]]], str]
) -> list[str]:
    """The report's section on the capacity model against measurement: host, fitted costs,
    residuals, the held-out validation table and the verdicts; ``table`` renders rows as
    Markdown (the report's own helper)."""
    shown = calibration_tables(root)
    lines = ["## Does the capacity model predict measurements?", ""]
    if shown is None:
        return lines + [(f"No calibration under `{Path(root).name}/` (run `make calibrate`): "
                        "the plans above carry no error bars and the model is unvalidated."),
                        "", *cluster_markdown(Path(root).parent, table)]  # fmt: skip
    verdicts = verdict_text(shown.verdicts)
    lines += [
        (f"`sobranie-bench capacity calibrate` fitted each server's CPU to its fit points and "
        f"predicted points it did not see, then measured them ({shown.host}; TLS on, "
        f"loopback). Thresholds: {THRESHOLDS}. {verdicts}."), "",
        *(part for headers, rows in ((COST_HEADERS, shown.costs),
                                     (RESIDUAL_HEADERS, shown.residuals),
                                     (VALIDATION_HEADERS, shown.validation))
          if rows for part in (table(headers, rows), "")),
        ("A delivery's CPU is the line's times a factor over the load that the fit points "
        "measured (fitted: through each point's mean; line residual: the least-squares line "
        "alone); a capacity trial is predicted from the calibration's own capacity trials "
        "(their steps cost more than fresh fan-out points) and judged on the median of its "
        "trials. Host share: run / (run + run-queue wait) of the process over the point's "
        "window (schedstat); the model runs each process at the share it got, and the plan at "
        "a whole core."), "",
    ]  # fmt: skip
    lines += [f"- refused: {why}" for why in shown.refused.values()] + [""]
    return lines + cluster_markdown(Path(root).parent, table)


def cluster_markdown(
    results_root: Path | str, table: Callable[[Sequence[str], Sequence[Sequence[str]]], str]
) -> list[str]:
    """The report's section on the fleet model against the newest cluster run under
    ``results_root/runs`` (nothing when there is none)."""
    from sobranie_bench.capacity.clustercheck import latest_cluster_run

    root = Path(results_root)
    run = latest_cluster_run(root / "runs")
    rows = cluster_rows(run, root / "summary.csv")
    if run is None or not rows:
        return []
    return ["### The fleet model against a real cluster", "",
            (f"Run `{run.name}` (`run --cluster`, Redis; {CLUSTER_CAPTION}). Re-measure: "
             "`sobranie-bench run --profile holdout --cluster 3 --broker redis --scenarios "
             "fanout,failover,backplane --transports ws,sse`."), "",
            f"Verdicts: {verdict_text(cluster_verdicts(rows))}.", "",
            table(VALIDATION_HEADERS, rows), ""]  # fmt: skip
