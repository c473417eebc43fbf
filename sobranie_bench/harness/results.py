"""Raw results (one JSON file per transport x scenario x parameters x trial) and the tidy
summary derived from them. ``summarize`` is a pure function of a raw file: the CSV can always
be regenerated, and any percentile recomputed from the encoded histograms.
Schema: docs/methodology.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sobranie_bench.harness.recorder import decode, stats

RAW_VERSION = 1
SUMMARY_COLUMNS = ["run_id", "transport", "scenario", "params", "trial", "metric", "value",
                   "unit", "client_bound", "tls", "saturated", "noisy", "network"]
CLIENT_BOUND_PERCENT = 90.0
"""A harness process this busy (while the server is not) means the client was the limit."""
SATURATED_SHARE = 0.95
"""An achieved rate below this share of the offered one marks a run ``saturated``."""
RISING_RATIO = 2.0
RISING_MIN_US = 1000.0
"""p50 of the last third of the measured window at least RISING_RATIO times that of the first
third, and RISING_MIN_US more, is latency rising through the window: ``saturated`` too."""
NOISY_SHARE = 0.25
"""Other processes using more than this share of the machine's cores mark a run ``noisy``."""
LATENCY_HISTOGRAMS = ("rtt", "latency")
"""The histogram whose thirds tell whether latency rose through the window."""


def params_key(params: dict[str, Any]) -> str:
    """Canonical ``k=v;k=v`` (sorted keys; lists joined with ``/``)."""
    def value(v: Any) -> str:
        return "/".join(map(str, v)) if isinstance(v, list) else str(v)
    return ";".join(f"{k}={value(params[k])}" for k in sorted(params))


def raw_name(raw: dict[str, Any]) -> str:
    """``<transport>-<scenario>-<params digest>-t<trial>.json``; ``-plain`` before ``.json``
    for the plaintext half of a point compared by ``run --tls-compare``."""
    digest = hashlib.sha1(params_key(raw["params"]).encode()).hexdigest()[:8]
    plain = tls_compared(raw) and not raw.get("tls")
    return f"{raw['transport']}-{raw['scenario']}-{digest}-t{raw['trial']}" \
        f"{'-plain' if plain else ''}.json"


def tls_compared(raw: dict[str, Any]) -> bool:
    """Whether the raw is a half (plaintext or TLS) of a point ``run --tls-compare`` measured
    both ways (older raws: every raw of such a run)."""
    return bool(raw.get("tls_compared") or raw.get("metadata", {}).get("tls_compare") is True)


def write_raw(run_dir: Path, raw: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / raw_name(raw)
    path.write_text(json.dumps(raw, indent=1, sort_keys=True))
    return path


def load_raw(root: Path) -> list[dict[str, Any]]:
    """Every raw result under ``root`` (a results dir, a runs dir or one run dir)."""
    out = []
    for path in sorted(root.rglob("*.json")):
        if path.name == "run.json":
            continue
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("version") == RAW_VERSION and "scenario" in data:
            out.append(data)
    return out


# --- resources -------------------------------------------------------------------------------

RUN_NS, WAIT_NS = 3, 4
"""Columns of a sample holding schedstat's run and run-queue wait nanoseconds (when taken)."""


def at(samples: list[list[float]], t: float, column: int) -> float | None:
    """A cumulative ``column`` at time ``t``, linear between the samples around it (the
    nearest sample when ``t`` lies outside them); None without samples holding it."""
    rows = [s for s in samples if len(s) > column]
    if not rows:
        return None
    before = [s for s in rows if s[0] <= t]
    after = [s for s in rows if s[0] >= t]
    if not before or not after:
        return float((after or before)[0 if after else -1][column])
    low, high = before[-1], after[0]
    if high[0] <= low[0]:
        return float(low[column])
    share = (t - low[0]) / (high[0] - low[0])
    return float(low[column] + share * (high[column] - low[column]))


def cpu_between(samples: list[list[float]], start: float, end: float) -> float | None:
    """CPU seconds a process used between two monotonic times, over exactly that window:
    schedstat's run time (ns) where sampled, else psutil's CPU time (10 ms ticks), each
    interpolated at the window's edges."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return None
    column, scale = (RUN_NS, 1e-9) if all(len(s) > RUN_NS for s in samples) else (1, 1.0)
    low, high = at(samples, start, column), at(samples, end, column)
    return None if low is None or high is None else (high - low) * scale


def run_queue_wait(samples: list[list[float]], start: float, end: float) -> float | None:
    """Share of the window (0..1) a process's threads waited in a run queue for a CPU
    (schedstat); None when the samples do not hold it."""
    if end <= start or not samples or any(len(s) <= WAIT_NS for s in samples):
        return None
    low, high = at(samples, start, WAIT_NS), at(samples, end, WAIT_NS)
    return None if low is None or high is None else (high - low) * 1e-9 / (end - start)


def cpu_percent(samples: list[list[float]], start: float, end: float) -> float | None:
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return 100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def harness_names(raw: dict[str, Any]) -> list[str]:
    return [n for n in raw.get("resources", {}) if not n.startswith("server")]


def server_samples(raw: dict[str, Any]) -> list[list[float]]:
    """The server's samples; for a cluster, every instance's CPU and RSS added up (the sampler
    samples all processes at the same instants)."""
    res = raw.get("resources", {})
    servers = [res[n] for n in sorted(res) if n.startswith("server")]
    if len(servers) <= 1:
        return servers[0] if servers else []
    return [[rows[0][0], *(sum(r[i] for r in rows) for i in range(1, min(map(len, rows))))]
            for rows in zip(*servers)]


def is_client_bound(raw: dict[str, Any], start: float, end: float) -> bool:
    res = raw.get("resources", {})
    server = cpu_percent(server_samples(raw), start, end)
    harness = [cpu_percent(res[n], start, end) for n in harness_names(raw)]
    return harness_bound(server, max((h for h in harness if h is not None), default=0.0))


def harness_bound(server_percent: float | None, harness_percent: float) -> bool:
    """The client-bound rule: the busiest harness process ran at least CLIENT_BOUND_PERCENT
    of a core, and more than the server (percent of one core each; None: not sampled)."""
    return harness_percent >= CLIENT_BOUND_PERCENT and (
        server_percent is None or server_percent < harness_percent)


# --- flags: saturated, noisy -----------------------------------------------------------------

def measured_seconds(raw: dict[str, Any]) -> float:
    w = raw.get("window", {})
    return max(w.get("end", 0) - w.get("measure", 0), 1e-9)


def achieved_share(raw: dict[str, Any]) -> float | None:
    """Achieved rate / offered rate: echo replies, or fan-out deliveries (offered: publishes x
    subscribers), that arrived inside the measured window, per second of it (raw files older
    than that counter: the replies to measured sends over the window stretched to the last
    of them); None for scenarios without a rate."""
    c, p = raw.get("counters", {}), raw.get("params", {})
    if raw.get("scenario") == "echo" and p.get("rate"):
        offered, name = float(p["rate"]), "received"
    elif raw.get("scenario") == "fanout" and p.get("rate") and p.get("subscribers"):
        offered, name = float(p["rate"]) * float(p["subscribers"]), "delivered"
    else:
        return None
    duration = float(raw.get("timing", {}).get("duration") or 0)
    if f"{name}_in_window" in c and duration > 0:
        return c[f"{name}_in_window"] / duration / offered
    return c.get(f"{name}_measured", 0) / measured_seconds(raw) / offered


def latency_thirds(raw: dict[str, Any]) -> list[float] | None:
    """p50 (µs) of the first, middle and last third of the measured window, when recorded."""
    for name in LATENCY_HISTOGRAMS:
        thirds = raw.get("histograms", {}).get(name, {}).get("thirds")
        if thirds:
            p50s = [stats(decode(t)).get("p50") for t in thirds]
            return [float(v) for v in p50s if v is not None] if None not in p50s else None
    return None


def is_saturated(raw: dict[str, Any]) -> bool:
    """The server (or the path to it) could not keep up: the achieved rate fell below
    SATURATED_SHARE of the offered one, or latency rose through the measured window (the
    latency is then queueing, and grows with the window's length)."""
    if "error" in raw:
        return False
    if short_of_offered(achieved_share(raw)):
        return True
    thirds = latency_thirds(raw)
    return thirds is not None and thirds[0] > 0 and (
        thirds[2] >= RISING_RATIO * thirds[0] and thirds[2] - thirds[0] >= RISING_MIN_US)


def _delta(samples: list[list[float]], start: float, end: float, column: int) -> float | None:
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2:
        return None
    low, high = at(samples, start, column), at(samples, end, column)
    return None if low is None or high is None else high - low


def others_cores(raw: dict[str, Any]) -> float | None:
    """Cores that processes other than ours (server, harness, workers, the services we
    started, a --target's process by its pid or its /metrics) kept busy on average over the measured window (the whole run for a scenario
    without one); None without machine samples."""
    samples = raw.get("machine", {}).get("samples", [])
    w = raw.get("window", {})
    start, end = w.get("measure", 0), w.get("end", 0)
    if end <= start and len(samples) >= 2:  # no timed window (connections): the whole run
        start, end = samples[0][0], samples[-1][0]
    busy, ours = _delta(samples, start, end, 1), _delta(samples, start, end, 2)
    if busy is None or ours is None or end <= start:
        return None
    if raw.get("server_cpu_source") == "metrics":  # a --target's CPU, from its /metrics
        ours += cpu_between(server_samples(raw), start, end) or 0.0
    return max(0.0, busy - ours) / (end - start)


def short_of_offered(share: float | None) -> bool:
    """An achieved / offered rate below SATURATED_SHARE (None: not known, not short)."""
    return share is not None and share < SATURATED_SHARE


def crowded(others: float | None, cores: int) -> bool:
    """Other processes kept more than NOISY_SHARE of ``cores`` busy (None: not known)."""
    return others is not None and others > NOISY_SHARE * cores


def is_noisy(raw: dict[str, Any]) -> bool:
    """Other processes took more than NOISY_SHARE of the machine's cores during the window,
    or the run's emulated link could not hold its profile (the lab's probe, ``off_profile``)."""
    link = (raw.get("metadata") or {}).get("network") or {}
    return bool(link.get("off_profile")) or crowded(others_cores(raw),
                                                    raw.get("machine", {}).get("cores") or 1)


def flags(raw: dict[str, Any]) -> dict[str, bool]:
    """What makes a run's figures not what they seem: ``client_bound``, ``saturated``,
    ``noisy`` (docs/methodology.md)."""
    w = raw.get("window", {})
    return {"client_bound": is_client_bound(raw, w.get("measure", 0), w.get("end", 0)),
            "saturated": is_saturated(raw), "noisy": is_noisy(raw)}


# --- summary --------------------------------------------------------------------------------

def latency_rows(prefix: str, encoded: str) -> dict[str, tuple[float, str]]:
    """``<prefix>_p50_us`` ... ``_max_us``, ``_mean_us`` and ``_count`` of an encoded
    histogram (nothing when it is empty)."""
    s = stats(decode(encoded))
    if not s["count"]:
        return {}
    rows = {f"{prefix}_{k}_us": (float(s[k]), "us")
            for k in ("p50", "p90", "p95", "p99", "max", "mean")}
    rows[f"{prefix}_count"] = (float(s["count"]), "count")
    return rows


def cpu_per_event(raw: dict[str, Any], count: float, event: str) -> dict[str, tuple[float, str]]:
    """``server_cpu_us_per_<event>`` and ``harness_cpu_us_per_<event>``: CPU µs the server
    and the harness processes (together) used over the measured window per ``count`` events
    in it (none of either without samples or events)."""
    w, res = raw.get("window", {}), raw.get("resources", {})
    start, end = w.get("measure", 0), w.get("end", 0)
    harness = [cpu_between(res[n], start, end) for n in harness_names(raw)]
    cpu = {"server": cpu_between(server_samples(raw), start, end),
           "harness": sum(x for x in harness if x is not None) if harness else None}
    return {f"{who}_cpu_us_per_{event}": (seconds * 1e6 / count, "us")
            for who, seconds in cpu.items() if seconds is not None and count > 0}


def server_load(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """What the server's core did over the measured window: ``server_cpu_cores`` busy and
    ``server_run_queue_wait_percent`` of the window its threads waited for a CPU."""
    w, server = raw.get("window", {}), server_samples(raw)
    start, end = w.get("measure", 0), w.get("end", 0)
    m: dict[str, tuple[float, str]] = {}
    cpu = cpu_between(server, start, end)
    if cpu is not None:
        m["server_cpu_cores"] = (cpu / measured_seconds(raw), "cores")
    wait = run_queue_wait(server, start, end)
    if wait is not None:
        m["server_run_queue_wait_percent"] = (100 * wait, "%")
    return m


def read_summary(path: Path | str = "results/summary.csv") -> Any:
    """The summary as a pandas DataFrame (the reader notebooks and models use)."""
    import pandas as pd

    return pd.read_csv(path, dtype={"params": str, "run_id": str})
