"""Loading the raw results and choosing what the report compares.

The report reads raw files only (``results.load_raw``) and summarises them itself
(``figures.summary_rows``), so it never depends on a stale ``summary.csv``. For every
transport x scenario it keeps the most recent run (run ids are UTC timestamps, so the largest
is the newest). Ratios between transports are only taken inside one run: :meth:`Results.peers`
names the transports a value may be compared with.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sobranie_bench.clients import TRANSPORTS
from sobranie_bench.harness import figures
from sobranie_bench.harness import results as raw_results


@dataclass(frozen=True)
class Measured:
    """One metric of one transport x scenario x parameter point, over its trials."""

    value: float
    """Median over trials."""
    low: float
    """Smallest trial value."""
    high: float
    """Largest trial value."""
    trials: int
    """Trials behind the median."""
    unit: str
    """Unit as written in the summary (us, bytes, msg/s, count...)."""
    run_id: str
    """Run the trials belong to."""
    params: str
    """Canonical parameter key of the point."""
    client_bound: bool
    """True when any trial was flagged client-bound (the harness, not the server, was the
    limit): such a figure is a lower bound on the server and is marked in every table."""
    saturated: bool = False
    """True when any trial was flagged saturated (achieved rate under 95% of the offered one,
    or latency rising through the window): the latency is queueing; marked in every table."""
    noisy: bool = False
    """True when any trial was flagged noisy (other processes took over a quarter of the
    cores during it): marked in every table."""

    @property
    def flagged(self) -> bool:
        """Any flag that makes the figure not what it seems."""
        return self.client_bound or self.saturated or self.noisy
    ci_low: float = float("nan")
    """Lower end of the 95% bootstrap confidence interval of the median (3+ trials); the
    smallest trial with fewer."""
    ci_high: float = float("nan")
    """Upper end of that interval; the largest trial with fewer than 3 trials."""

    @property
    def bootstrapped(self) -> bool:
        """Whether ``ci_low``..``ci_high`` is a bootstrap interval (3+ trials)."""
        return self.trials >= BOOTSTRAP_MIN_TRIALS


BOOTSTRAP_MIN_TRIALS = 3
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(values: list[float], level: float = 0.95, seed: int = 1) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (seeded: reproducible);
    min and max with fewer than BOOTSTRAP_MIN_TRIALS values."""
    return _bootstrap_ci(tuple(values), level, seed)


@functools.lru_cache(maxsize=8192)
def _bootstrap_ci(values: tuple[float, ...], level: float, seed: int) -> tuple[float, float]:
    """:func:`bootstrap_ci`, once per process for the same values (the report asks for the
    same figure thousands of times; 2000 resamples in Python take about 20 ms)."""
    import random

    if len(values) < BOOTSTRAP_MIN_TRIALS:
        return min(values), max(values)
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n))
                     for _ in range(BOOTSTRAP_RESAMPLES))
    tail = (1 - level) / 2
    return (medians[int(tail * (BOOTSTRAP_RESAMPLES - 1))],
            medians[int((1 - tail) * (BOOTSTRAP_RESAMPLES - 1))])


@dataclass(frozen=True)
class Results:
    """The raw results the report is built from: the newest run per transport x scenario."""

    root: Path
    """Directory the raw files were read from."""
    raws: tuple[dict[str, Any], ...]
    """Selected raw results (newest run per transport x scenario)."""
    rows: pd.DataFrame = field(repr=False)
    """Tidy summary rows of the selected raws (``results.SUMMARY_COLUMNS``)."""
    ignored: int = 0
    """Raw files of older runs that the selection left out."""
    scaleout: dict[str, Results] = field(default_factory=dict)
    """Set-up (e.g. ``3 instances over redis``) -> its runs: runs against a cluster or with a
    shared broker (``run --cluster N --broker URL``), selected the same way and kept apart so
    one-instance figures are never mixed with them."""
    tls_compared: Results | None = None
    """The runs that measured the same points plaintext and over TLS (``run --tls-compare``),
    selected the same way and kept apart (the TLS cost table reads them; the comparison's
    other tables never mix a plaintext half into the TLS matrix)."""
    networks: dict[str, Results] = field(default_factory=dict)
    """Emulated network profile (``4g``...) -> the runs made under it (``run --network``),
    selected the same way and kept apart from the loopback figures (rules and SLAs judged on a
    profile read them)."""

    # --- what is there -----------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return not self.raws

    @property
    def transports(self) -> tuple[str, ...]:
        """Measured transports, in registry order (unknown names last, sorted)."""
        seen = {raw["transport"] for raw in self.raws}
        known = [t for t in TRANSPORTS if t in seen]
        return tuple(known + sorted(seen - set(known)))

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(sorted({raw["scenario"] for raw in self.raws}))

    def measured(self, transport: str, scenario: str | None = None) -> bool:
        return any(raw["transport"] == transport and scenario in (None, raw["scenario"])
                   for raw in self.raws)

    @property
    def with_figures(self) -> tuple[str, ...]:
        """Measured transports that have figures (not only failed runs)."""
        return tuple(t for t in self.transports if self.has_figures(t))

    def has_figures(self, transport: str) -> bool:
        """True when some run of this transport produced figures (not only failures)."""
        rows = self.rows
        return bool(((rows["transport"] == transport) & (rows["metric"] != "run_failed")).any())

    def failed(self, transport: str, scenario: str) -> bool:
        """True when the selected run of this transport x scenario failed (``error`` in the
        raw file): tables say "run failed", not "not measured"."""
        raws = self.raw(transport, scenario)
        return bool(raws) and all("error" in raw for raw in raws)

    def run_id(self, transport: str, scenario: str) -> str | None:
        """The run this transport x scenario was taken from (None when not measured)."""
        for raw in self.raws:
            if raw["transport"] == transport and raw["scenario"] == scenario:
                return str(raw["metadata"]["run_id"])
        return None

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(sorted({str(raw["metadata"]["run_id"]) for raw in self.raws}))

    @property
    def main_run(self) -> str | None:
        """The run holding the most transport x scenario pairs (ties: the newest)."""
        counts: dict[str, int] = {}
        for raw in self.raws:
            run = str(raw["metadata"]["run_id"])
            counts[run] = counts.get(run, 0) + 1
        if not counts:
            return None
        return max(counts, key=lambda run: (counts[run], run))

    def metadata(self, run_id: str | None = None) -> dict[str, Any]:
        """Environment of a run (the main run by default): Python, CPU, cores, commit..."""
        wanted = run_id or self.main_run
        for raw in self.raws:
            if raw["metadata"]["run_id"] == wanted:
                return dict(raw["metadata"])
        return {}

    def peers(self, transport: str, scenario: str) -> tuple[str, ...]:
        """Transports whose ``scenario`` comes from the same run as ``transport``'s (itself
        included): the only ones its figures may be divided by."""
        run = self.run_id(transport, scenario)
        if run is None:
            return ()
        return tuple(t for t in self.transports if self.run_id(t, scenario) == run)

    # --- parameter points --------------------------------------------------------------------

    def params_points(self, scenario: str, transport: str | None = None) -> list[str]:
        points = {raw_results.params_key(raw["params"]) for raw in self.raws
                  if raw["scenario"] == scenario and transport in (None, raw["transport"])}
        return sorted(points, key=_params_order)

    def reference_params(self, scenario: str, transports: Iterable[str] | None = None) -> str | None:
        """The parameter point to compare transports at: the one measured for the most of
        ``transports`` (default all), ties broken towards the smallest numbers (fewest
        connections, smallest payload, lowest rate)."""
        names = tuple(transports) if transports is not None else self.transports
        have = {t: self.params_points(scenario, t) for t in names}
        counts: dict[str, int] = {}
        for points in have.values():
            for key in points:
                counts[key] = counts.get(key, 0) + 1
        if not counts:
            return None
        return min(counts, key=lambda key: (-counts[key], _params_order(key)))

    def point(self, scenario: str, transport: str, **match: float) -> str | None:
        """This transport's parameter point whose numeric parameters equal ``match``, e.g.
        ``point("overhead", "ws", payload=4096)``; the first in order when several fit."""
        for key in self.params_points(scenario, transport):
            params = dict(item.partition("=")[::2] for item in key.split(";") if item)
            try:
                if all(float(params.get(k, "nan")) == float(v) for k, v in match.items()):
                    return key
            except ValueError:
                continue
        return None

    def default_params(self, transport: str, scenario: str) -> str | None:
        """The scenario's reference point if this transport has it, else its only point."""
        points = self.params_points(scenario, transport)
        reference = self.reference_params(scenario)
        if reference in points:
            return reference
        return points[0] if len(points) == 1 else None

    # --- figures -----------------------------------------------------------------------------

    def figure(self, transport: str, scenario: str, metric: str,
               params: str | None = None, tls: bool | None = None) -> Measured | None:
        """Median over trials of ``metric`` at ``params`` (default: the scenario's reference
        point, or the only point this transport has), over the TLS or the plaintext trials
        as ``tls`` says (by default the TLS ones where a ``--tls-compare`` run holds both)."""
        if params is None:
            params = self.default_params(transport, scenario)
        rows = self.rows
        if rows.empty or params is None:
            return None
        sel = rows[(rows["transport"] == transport) & (rows["scenario"] == scenario)
                   & (rows["metric"] == metric) & (rows["params"] == params)]
        if tls is None and sel["tls"].nunique() > 1:
            tls = True
        if tls is not None:
            sel = sel[sel["tls"] == tls]
        if sel.empty:
            return None
        values = [float(v) for v in sel["value"]]
        ci_low, ci_high = bootstrap_ci(values)
        return Measured(value=float(statistics.median(values)), low=min(values),
                        high=max(values), trials=len(values), unit=str(sel["unit"].iloc[0]),
                        run_id=str(sel["run_id"].iloc[0]), params=params,
                        client_bound=bool(sel["client_bound"].any()),
                        **{flag: bool(sel[flag].any()) for flag in ("saturated", "noisy")
                           if flag in sel},
                        ci_low=ci_low, ci_high=ci_high)

    def value(self, transport: str, scenario: str, metric: str,
              params: str | None = None) -> float | None:
        fig = self.figure(transport, scenario, metric, params)
        return None if fig is None else fig.value

    def ratio(self, a: str, b: str, scenario: str, metric: str,
              params: str | None = None) -> float | None:
        """``a / b`` for one metric, or None when either is missing or they come from
        different runs (ratios are never taken across runs)."""
        fa, fb = self.figure(a, scenario, metric, params), self.figure(b, scenario, metric, params)
        if fa is None or fb is None or fa.run_id != fb.run_id or fb.value == 0:
            return None
        return fa.value / fb.value

    def best(self, transport: str, scenario: str, metric: str, params: str | None = None,
             higher_is_better: bool = False) -> float | None:
        """The best value of ``metric`` among ``transport``'s peers in its run."""
        values = [f.value for t in self.peers(transport, scenario)
                  if (f := self.figure(t, scenario, metric, params)) is not None]
        values = [v for v in values if v > 0]
        if not values:
            return None
        return max(values) if higher_is_better else min(values)

    # --- raw detail --------------------------------------------------------------------------

    def raw(self, transport: str, scenario: str) -> list[dict[str, Any]]:
        return [raw for raw in self.raws
                if raw["transport"] == transport and raw["scenario"] == scenario]

    def capacity_steps(self, transport: str) -> list[dict[str, Any]]:
        """The capacity scenario's steps (subscribers, p95_us, lost, failures), first trial."""
        for raw in self.raw(transport, "capacity"):
            return [dict(step) for step in raw.get("steps", [])]
        return []


def _params_order(key: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for item in filter(None, key.split(";")):
        name, _, value = item.partition("=")
        first = value.split("/")[0]
        try:
            out.append((name, float(first), value))
        except ValueError:
            out.append((name, float("inf"), value))
    return tuple(out)


def setup(raw: dict[str, Any]) -> str:
    """``one instance`` (memory broker, no cluster) or e.g. ``3 instances over redis``."""
    meta = raw.get("metadata", {})
    broker = str(meta.get("broker") or "memory").split(":", 1)[0]
    instances = int(meta.get("cluster") or 0)
    if broker == "memory" and instances <= 1:
        return "one instance"
    return f"{max(instances, 1)} instance{'s' if instances > 1 else ''} over {broker}"


def select_latest(raws: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Keep, per transport x scenario x set-up, only the raws of the newest run; also return
    how many raws were left out."""
    raws = list(raws)
    newest: dict[tuple[str, str, str], str] = {}

    def key(raw: dict[str, Any]) -> tuple[str, str, str]:
        return raw["transport"], raw["scenario"], setup(raw)

    for raw in raws:
        run = str(raw["metadata"]["run_id"])
        newest[key(raw)] = max(newest.get(key(raw), run), run)
    kept = [raw for raw in raws if str(raw["metadata"]["run_id"]) == newest[key(raw)]]
    kept.sort(key=lambda r: (r["transport"], r["scenario"],
                             raw_results.params_key(r["params"]), r["trial"]))
    return kept, len(raws) - len(kept)


def _results(root: Path, raws: list[dict[str, Any]], ignored: int = 0,
             scaleout: dict[str, Results] | None = None,
             tls_compared: Results | None = None,
             networks: dict[str, Results] | None = None) -> Results:
    rows = pd.DataFrame(figures.summary_rows(raws), columns=raw_results.SUMMARY_COLUMNS)
    return Results(root=root, raws=tuple(raws), rows=rows, ignored=ignored,
                   scaleout=scaleout or {}, tls_compared=tls_compared, networks=networks or {})


def load(results_dir: Path | str = "results") -> Results:
    """Every raw result under ``results_dir`` (its ``runs/`` if there is one), newest run per
    transport x scenario x set-up, with their tidy summary rows. One-instance runs make the
    main results; cluster and shared-broker runs go to ``.scaleout``, the points of
    ``run --tls-compare`` (both halves) to ``.tls_compared``, ``run --network`` runs to
    ``.networks`` by profile."""
    root = Path(results_dir)
    source = root / "runs" if (root / "runs").is_dir() else root
    raws = raw_results.load_raw(source) if source.is_dir() else []
    # both halves of every point measured plaintext and over TLS; a `run --tls-compare` run
    # stays out of the main selection, and so do the plaintext halves of a main run whose
    # named points were compared (`run --tls-compare echo,...`: its TLS halves are main points)
    compared = [raw for raw in raws if raw_results.tls_compared(raw)]
    raws = [raw for raw in raws if raw["metadata"].get("tls_compare") is not True
            and not (raw_results.tls_compared(raw) and not raw.get("tls"))]
    # runs under an emulated network (`run --network`) are kept apart, by profile
    by_network: dict[str, list[dict[str, Any]]] = {}
    for raw in raws:
        by_network.setdefault(str(raw.get("network") or "loopback"), []).append(raw)
    raws = by_network.pop("loopback", [])
    kept, ignored = select_latest(raws)
    by_setup: dict[str, list[dict[str, Any]]] = {}
    for raw in kept:
        by_setup.setdefault(setup(raw), []).append(raw)
    single = by_setup.pop("one instance", [])
    return _results(root, single, ignored,
                    {name: _results(root, raws) for name, raws in sorted(by_setup.items())},
                    _results(root, select_latest(compared)[0]) if compared else None,
                    {net: _results(root, select_latest(runs)[0])
                     for net, runs in sorted(by_network.items())})


def summary_frame(res: Results) -> pd.DataFrame:
    """The selected rows in the shape ``capacity.calibrate`` reads (a copy)."""
    return res.rows.copy()


def scenario_frame(res: Results, scenario: str, metrics: Iterable[str],
                   params: str | None = None) -> pd.DataFrame:
    """One row per transport measured in ``scenario``: the median of each metric at
    ``params`` (default: each transport's default point), with its run, point and whether
    any figure was client-bound. Missing figures are NaN."""
    metrics = list(metrics)
    records = []
    for t in res.transports:
        if not res.measured(t, scenario):
            continue
        point = params or res.default_params(t, scenario)
        figs = {m: res.figure(t, scenario, m, point) for m in metrics}
        records.append({"transport": t,
                        **{m: (f.value if f is not None else float("nan"))
                           for m, f in figs.items()},
                        "client_bound": any(f.client_bound for f in figs.values() if f),
                        "saturated": any(f.saturated for f in figs.values() if f),
                        "noisy": any(f.noisy for f in figs.values() if f),
                        "run_id": res.run_id(t, scenario), "params": point})
    columns = ["transport", *metrics, "client_bound", "saturated", "noisy", "run_id", "params"]
    return pd.DataFrame.from_records(records, columns=columns).set_index("transport")


def extremes(res: Results, scenario: str, metric: str
             ) -> tuple[tuple[str, Measured], tuple[str, Measured]] | None:
    """The lowest and highest value of ``metric`` among the transports of the main run, at
    the scenario's reference point: ((transport, figure), (transport, figure))."""
    params = res.reference_params(scenario)
    found = [(t, f) for t in res.transports
             if (f := res.figure(t, scenario, metric, params)) is not None
             and f.run_id == res.main_run]
    if not found:
        return None
    found.sort(key=lambda item: item[1].value)
    return found[0], found[-1]


def capacity_steps_frame(res: Results) -> pd.DataFrame:
    """Every capacity-scenario step: transport, subscribers, p95 (ms), lost, failures."""
    records = [{"transport": t, "subscribers": s.get("subscribers"),
                "p95_ms": s.get("p95_us", float("nan")) / 1000, "lost": s.get("lost"),
                "failures": s.get("failures")}
               for t in res.transports for s in res.capacity_steps(t)]
    return pd.DataFrame.from_records(
        records, columns=["transport", "subscribers", "p95_ms", "lost", "failures"])
