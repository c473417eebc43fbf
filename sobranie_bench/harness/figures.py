"""Every figure of one raw result, and the tidy summary made of them: the figures every
scenario has (``results``: achieved share, other processes' CPU, a cluster broker's CPU per
message) and the scenario's own (its ``Scenario.metrics``, declared in its module). Above both
``results`` and the scenarios, which use ``results``' helpers, so neither imports the other
back."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sobranie_bench.harness.results import (
    SUMMARY_COLUMNS,
    achieved_share,
    cpu_between,
    flags,
    load_raw,
    others_cores,
    params_key,
)
from sobranie_bench.harness.scenarios.registry import registry


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """Every metric of one raw result, as name -> (value, unit): the ones every scenario has
    (achieved share of the offered rate, other processes' CPU, a cluster broker's CPU per
    message), then the scenario's own (its ``Scenario.metrics``); a failed run has only
    ``run_failed``."""
    if "error" in raw:
        return {"run_failed": (1.0, "flag")}
    c, w, res = raw.get("counters", {}), raw.get("window", {}), raw.get("resources", {})
    m: dict[str, tuple[float, str]] = {}
    share, others = achieved_share(raw), others_cores(raw)
    if share is not None:
        m["achieved_percent_of_offered"] = (100 * share, "%")
    if others is not None:
        m["other_processes_cpu_cores"] = (others, "cores")
    scenario = registry().get(raw["scenario"])
    if scenario is not None:
        m.update(scenario.metrics(raw))
    if "broker" in res:  # a cluster's own broker, sampled like the servers
        messages = c.get("published", c.get("acked", 0))
        cpu = cpu_between(res["broker"], w.get("start", 0), w.get("end", 0))
        if cpu is not None and messages > 0:
            m["broker_cpu_us_per_msg"] = (cpu * 1e6 / messages, "us")
    return m


def summarize(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The tidy rows of one raw result (pure: same raw, same rows)."""
    base = {"run_id": raw["metadata"]["run_id"], "transport": raw["transport"],
            "scenario": raw["scenario"], "params": params_key(raw["params"]),
            "trial": raw["trial"], "tls": bool(raw.get("tls", False)), **flags(raw),
            "network": raw.get("network", "loopback")}
    return [{**base, "metric": name, "value": round(float(value), 3), "unit": unit}
            for name, (value, unit) in sorted(metrics(raw).items())]


def summary_rows(raws: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [row for raw in raws for row in summarize(raw)]
    rows.sort(key=lambda r: (r["run_id"], r["transport"], r["scenario"], r["params"],
                             r["trial"], r["metric"]))
    return rows


def write_summary(runs_root: Path, out: Path) -> int:
    """Regenerate ``out`` (summary.csv) from every raw file under ``runs_root``."""
    rows = summary_rows(load_raw(runs_root))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
