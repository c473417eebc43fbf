"""Tables for people: summary metrics renamed to words with units, values in readable units
(ms, µs, KiB) and rounded to three significant digits. Notebooks show ``readable(frame)``."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

WORDS = {
    "rtt": "echo", "latency": "delivery", "connect": "connect", "server": "server",
    "harness": "harness", "cpu": "CPU", "rss": "memory", "msg": "message", "conn": "connection",
    "msgs": "messages", "throughput": "throughput", "keepalive": "keep-alive",
}
NAMES = {
    "server_cpu_us_per_msg": "server CPU per message (µs)",
    "server_cpu_us_per_delivery": "server CPU per delivery (µs)",
    "server_cpu_us_per_conn": "server CPU per connect (µs)",
    "harness_cpu_us_per_msg": "harness CPU per message (µs)",
    "harness_cpu_us_per_delivery": "harness CPU per delivery (µs)",
    "server_rss_bytes_per_conn": "memory per connection (KiB)",
    "throughput_msgs_per_s": "echoes per second",
    "offered_rate": "offered per second",
    "delivered_per_s": "deliveries per second",
    "keepalive_cpu_percent": "keep-alive CPU (% of a core)",
    "bytes_per_msg": "bytes per message (B)",
    "bytes_down_per_msg": "bytes down per message (B)",
    "bytes_up_per_msg": "bytes up per message (B)",
    "client_bound": "client-bound",
    "run_id": "run",
    "params": "point",
}


def column_name(metric: str) -> tuple[str, float]:
    """A metric's human name and the factor that converts its values into that unit."""
    if metric in NAMES:
        return NAMES[metric], (1 / 1024 if metric == "server_rss_bytes_per_conn" else 1.0)
    if metric.endswith("_us"):
        stem = metric.removesuffix("_us").split("_")
        words = " ".join(WORDS.get(w, w) for w in stem)
        return f"{words} (ms)", 1 / 1000
    return metric.replace("_", " "), 1.0


def significant(value: Any, digits: int = 3) -> Any:
    """``value`` rounded to ``digits`` significant digits (non-numbers unchanged)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))


def readable(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``frame`` with metric columns renamed to words and units, values converted and rounded."""
    out = frame.copy()
    renames = {}
    for col in out.columns:
        name, factor = column_name(str(col))
        renames[col] = name
        if pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = [significant(v * factor, digits) if pd.notna(v) else v for v in out[col]]
    out = out.rename(columns=renames)
    out.index.name = {"transport": "Transport"}.get(str(out.index.name), out.index.name)
    return out
