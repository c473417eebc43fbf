"""The fleet model against a measured cluster (``run --cluster N --broker redis``).

For each raw result of a cluster run, what the fleet model (:mod:`~sobranie_bench.capacity.fleet`)
and the storm model (:mod:`~sobranie_bench.capacity.storm`) predict for the same N and load,
beside what was measured, as :class:`~sobranie_bench.capacity.reality.Check` rows, each
judged against a stated tolerance (``TOLERANCES``):

- ``fanout`` and ``backplane``: the broker's CPU per published message. The fleet model counts
  ``RedisSpec.ops_per_publish`` Redis operations per publish and one per instance holding a
  subscriber (``redis_load``) at ``RedisSpec.ops_per_s_per_node``. The closed-loop backplane
  carries enough messages for the per-message cost to show; at a fan-out's few publishes per
  second the broker's idle CPU (its timers, the instances' connections) dominates the
  quotient, and the broker's CPU, sampled in psutil's 10 ms ticks, is one or two ticks over
  the window: a figure coarser than the tolerance is shown, not judged (fewer than
  ``MIN_TICKS``). Tolerance ±50%: ``RedisSpec``'s ops/s is a cited figure, not one fitted
  here. For ``fanout``, also the cross-instance latency (within 2x, as a p95): every
  delivery goes publisher -> Redis -> the subscriber's instance, on the publisher's instance
  too (``_p95_delivery``: sender leg + Redis hop + receiver), so the model predicts the same
  p95 for subscribers of another instance as for the publisher's own (ratio 1).
- ``failover`` (one of N instances SIGKILLed): the balancer spread the subscribers evenly, so
  subscribers / N are cut off; they resume from the cursor over the broker's history, so none
  is lost or duplicated; and every one of them is back after the storm model's time for them
  to reconnect to the N - 1 survivors (first attempt after the client's backoff: full jitter,
  uniform up to ``Backoff.base``, or without jitter exactly ``base``; handshakes at the
  transport's calibrated connect capacity), or sooner the first message published after the
  kill (within 2x). Cut off within one subscriber (the balancer's rounding); lost and
  duplicated exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sobranie_bench.capacity.calibration import TransportCosts
from sobranie_bench.capacity.fit import cluster_size
from sobranie_bench.capacity.fleet import RedisSpec
from sobranie_bench.capacity.reality import P95_FACTOR, Check
from sobranie_bench.capacity.storm import TICK_S, storm
from sobranie_bench.clients import Backoff
from sobranie_bench.harness import figures, results

SCENARIOS = ("fanout", "backplane", "failover")
REDIS = RedisSpec()  # the fleet model's default Redis node
BROKER_TOLERANCE = 0.5  # RedisSpec's ops/s per node is a cited figure, not a fitted one
PSUTIL_TICK_S = 0.01  # the broker's CPU is sampled by psutil, in clock ticks
MIN_TICKS = 10  # a CPU figure of fewer ticks is coarser than 10%: shown, not judged
TOLERANCES = (f"broker µs / message ±{BROKER_TOLERANCE:.0%} (at >= {MIN_TICKS} CPU ticks), "
              f"p95 other instance / own and all back s within {P95_FACTOR:g}x, cut off "
              "within 1, lost and duplicated 0")  # fmt: skip


def latest_cluster_run(runs: Path) -> Path | None:
    """The newest run directory under ``runs`` measured on a cluster, or None."""
    import json

    for run in sorted((p for p in runs.glob("*") if (p / "run.json").exists()), reverse=True):
        if int(json.loads((run / "run.json").read_text()).get("cluster") or 1) >= 2:
            return run
    return None


def _row(raw: dict[str, Any], metric: str, predicted: float, measured: float | None,
         note: str, threshold: str, test: Callable[[float, float], bool] | None
         ) -> Check | None:  # fmt: skip
    """One predicted against measured row; ``test(predicted, measured)`` judges it (None: shown,
    not judged, the note says why)."""
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return None
    error = None if not measured else predicted / measured - 1
    params = " ".join(f"{k}={v}" for k, v in sorted(raw["params"].items()))
    point = f"{raw['scenario']} N={cluster_size(raw)} {params}"
    passed = None if test is None else test(predicted, float(measured))
    return Check(raw["transport"], point, metric, predicted, float(measured), error,
                 threshold if test else "-", passed, False, note)  # fmt: skip


def _within_factor(predicted: float, measured: float) -> bool:
    return measured > 0 and 1 / P95_FACTOR <= predicted / measured <= P95_FACTOR


def _exact(predicted: float, measured: float) -> bool:
    return predicted == measured


def _broker(raw: dict[str, Any], m: Mapping[str, tuple[float, str]], redis: RedisSpec,
            subscribers: int) -> Check | None:  # fmt: skip
    subscribed = min(cluster_size(raw), subscribers)  # subscriber i is on instance i mod N
    predicted = (redis.ops_per_publish + subscribed) / redis.ops_per_s_per_node * 1e6
    measured = m.get("broker_cpu_us_per_msg", (math.nan, ""))[0]
    c = raw.get("counters", {})
    ticks = measured * c.get("published", c.get("acked", 0)) / 1e6 / PSUTIL_TICK_S
    coarse = "" if ticks >= MIN_TICKS else (
        f"; not judged: the broker's CPU over the load is {ticks:.0f} tick(s) of 10 ms")
    return _row(raw, "broker µs / message", predicted, measured,
                f"RedisSpec: {redis.ops_per_s_per_node:,.0f} ops/s per node, "
                f"{redis.ops_per_publish:g} ops per publish and one per subscribed instance "
                f"({subscribed}); measured: the broker's "
                f"CPU over the load (its idle share included) / messages published{coarse}",
                f"±{BROKER_TOLERANCE:.0%}",
                None if coarse else lambda p, m: abs(p / m - 1) <= BROKER_TOLERANCE)  # fmt: skip


def _recovery_s(raw: dict[str, Any], cut_off: int, costs: TransportCosts | None,
                backoff: bool = True) -> float:  # fmt: skip
    """Storm model: kill -> every cut-off client connected again and holding a message
    published after the kill. One published while a client was away reaches it with its
    resume (from the cursor over the broker's history), so the last client is back at its
    reconnection, or, when every client reconnected sooner, at the first publish after the
    kill: half a publish interval after it on average. ``backoff=False``: the clients re-poll
    at once (a long-poll's next request goes to another instance; it never ends a
    connection, so it never backs off)."""
    p, n = raw["params"], cluster_size(raw)
    jitter = bool(p.get("jitter", True)) and backoff
    base = Backoff().base if backoff else 0.0
    capacity = 1e6 / costs.cpu_us_per_connection.value if costs else 1_000.0
    result = storm(max(cut_off, 1), instances=n - 1,
                   strategy="full_jitter" if jitter else "none",
                   connect_capacity_per_s=capacity, jitter_window_s=max(base, TICK_S),
                   step_s=TICK_S)  # fmt: skip
    storm_s = result.time_to_recover_s or math.inf
    first = 0.0 if jitter else base  # `none` attempts at once; the client waits base first
    return max(first + storm_s, 0.5 / float(p["rate"]))


def cluster_checks(raws: Sequence[dict[str, Any]],
                   costs: Mapping[str, TransportCosts] | None = None,
                   redis: RedisSpec = REDIS) -> list[Check]:  # fmt: skip
    """Predicted against measured for every cluster ``fanout``, ``backplane`` and ``failover``
    result in ``raws`` (others are skipped); ``costs`` give the connect capacity."""
    checks: list[Check | None] = []
    for raw in sorted(raws, key=lambda r: (r["transport"], r["scenario"], str(r["params"]))):
        if cluster_size(raw) < 2 or raw["scenario"] not in SCENARIOS or "error" in raw:
            continue
        m, p, n = figures.metrics(raw), raw["params"], cluster_size(raw)
        value = {name: v for name, (v, _) in m.items()}
        if raw["scenario"] in ("fanout", "backplane"):
            subs = int(p["subscribers"]) * int(p.get("channels", 1))
            checks.append(_broker(raw, m, redis, subs))
        if raw["scenario"] == "fanout" and value.get("latency_local_p95_us"):
            ratio = value.get("latency_remote_p95_us", math.nan) / value["latency_local_p95_us"]
            checks.append(_row(raw, "p95 other instance / own", 1.0, ratio,
                               "every delivery goes through the broker, the publisher's own "
                               "instance's too: no extra hop for another instance's "
                               f"subscribers (local p95 {value['latency_local_p95_us']:,.0f} "
                               "µs)", f"within {P95_FACTOR:g}x", _within_factor))  # fmt: skip
        if raw["scenario"] == "failover":
            subscribers = int(p["subscribers"])
            cut = subscribers / n
            checks.append(_row(raw, "cut off", cut, value.get("cut_off"),
                               f"the balancer spreads {subscribers} subscribers over {n} "
                               "instances", "within 1",
                               lambda p, m: abs(p - m) <= 1))  # fmt: skip
            checks.append(_row(raw, "lost", 0.0, value.get("lost"),
                               "resumed from the cursor over the broker's history", "0",
                               _exact))  # fmt: skip
            checks.append(_row(raw, "duplicated", 0.0, value.get("duplicated"),
                               "ids per channel: a resumed client skips what it holds", "0",
                               _exact))  # fmt: skip
            backoff = value.get("reconnects", 1) > 0 or not value.get("cut_off")
            jitter = ("full jitter, first attempt within " f"{Backoff().base:g} s"
                      if p.get("jitter", True) else f"no jitter, first attempt at "
                      f"{Backoff().base:g} s") if backoff else "re-polled at once, no backoff"
            transport_costs = (costs or {}).get(raw["transport"])
            checks.append(_row(raw, "all back s",
                               _recovery_s(raw, round(cut), transport_costs, backoff),
                               value.get("recovery_max_s"),
                               f"storm model ({jitter}) onto {n - 1} survivors, or the first "
                               "publish after the kill if sooner; connect capacity "
                               f"{'calibrated' if transport_costs else 'default'}",
                               f"within {P95_FACTOR:g}x", _within_factor))  # fmt: skip
    return [c for c in checks if c is not None]


def load_cluster(root: Path | str) -> list[dict[str, Any]]:
    """Every cluster raw result under ``root`` (a results root, runs dir or one run)."""
    return [raw for raw in results.load_raw(Path(root)) if cluster_size(raw) >= 2]
