"""capacity: step up subscribers (like websocket-shootout) until fan-out p95 passes the SLA.

Each step is a short fan-out run at the same publish rate with more subscribers; the result is
the last step whose p95 one-way latency held under ``sla_ms`` (and lost nothing).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sobranie_bench.harness.recorder import decode, stats
from sobranie_bench.harness.scenarios import PartContext, Scenario, fanout


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    steps: list[dict[str, Any]] = []
    held = 0
    for n in p["steps"]:
        start = time.monotonic_ns() + int((1.0 + n / 500) * 1e9)
        step = dataclasses.replace(
            ctx, params={"channels": 1, "subscribers": n, "rate": p["rate"],
                         "payload": p["payload"]},
            start_ns=start, seed=ctx.seed * 100 + len(steps))
        out = await fanout.part(step)
        p95 = stats(decode(out["histograms"]["latency"]["measured"])).get("p95", float("inf"))
        c = out["counters"]
        lost = c["published"] * n - c["delivered"]
        steps.append({"subscribers": n, "p95_us": p95, "lost": lost,
                      "failures": c["connect_failures"]})
        if p95 > float(p["sla_ms"]) * 1000 or lost > 0 or c["connect_failures"]:
            break
        held = n
    return {"counters": {"max_clients_within_sla": held, "sla_ms": float(p["sla_ms"])},
            "steps": steps}


SCENARIO = Scenario(
    name="capacity", doc="step up subscribers until fan-out p95 passes the SLA (default 500 ms)",
    part=part, workers=False,
    grid={
        "ci": [{"steps": [100, 300], "rate": 20, "payload": 64, "sla_ms": 500}],
        "quick": [{"steps": [250, 500, 1000, 2000, 4000], "rate": 20, "payload": 64,
                   "sla_ms": 500}],
        "full": [{"steps": [500, 1000, 2000, 4000, 8000, 12000], "rate": 20, "payload": 64,
                  "sla_ms": 500}],
        # the knee the capacity model must predict (capacity validate): steps until it passes
        "holdout": [{"steps": [100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000, 3000,
                               4000, 6000, 8000, 12000, 16000], "rate": 20, "payload": 64,
                     "sla_ms": 500}],
    },
    timing={"ci": (0.3, 1.0), "quick": (1.0, 5.0), "full": (2.0, 10.0),
            "holdout": (1.0, 8.0)},
    # every step connects its subscribers (1 s + n / 500) then runs warm-up and window; the
    # runner's window is counted once by planned_seconds
    load_seconds=lambda p: sum(1.0 + n / 500 for n in p["steps"])
    + (len(p["steps"]) - 1) * 1.3,
    headline=[("max_clients_within_sla", "clients within SLA")],
)
