"""The fleet model against a cluster run: predictions beside made-up measured results."""

from __future__ import annotations

import pytest

from sobranie_bench.capacity.clustercheck import cluster_checks
from sobranie_bench.capacity.fit import trial_from_raw
from sobranie_bench.capacity.fleet import RedisSpec
from sobranie_bench.clients import Backoff
from tests.capacity.conftest import Raw, histogram


def test_an_instance_loss_is_predicted_for_the_same_n_and_load(failover_raw: Raw) -> None:
    checks = {(c.point.split(" jitter=")[1].split()[0], c.metric): c
              for c in cluster_checks([failover_raw(True), failover_raw(False)])}
    for jitter in ("True", "False"):
        assert checks[jitter, "cut off"].predicted == 50 and checks[jitter, "cut off"].measured == 50
        assert checks[jitter, "lost"].predicted == 0
        assert checks[jitter, "duplicated"].measured == 2  # a measured fact, shown
    back = checks["False", "all back s"]
    assert back.measured == pytest.approx(0.12)
    assert back.predicted is not None and back.predicted >= Backoff().base  # no jitter: waits base
    assert "no jitter" in back.note and "full jitter" in checks["True", "all back s"].note
    # judged: cut off within one, nothing lost, the 2 duplicates measured are a model miss
    assert checks["True", "cut off"].passed and checks["True", "lost"].passed
    assert checks["True", "duplicated"].passed is False
    assert back.passed == (0.5 <= back.predicted / 0.12 <= 2)


def test_one_server_results_are_not_the_fleet_models_and_cluster_ones_not_the_instances(
    failover_raw: Raw,
) -> None:
    assert cluster_checks([failover_raw(True, cluster=1)]) == []
    fanout = {"version": 1, "transport": "ws", "scenario": "fanout", "trial": 1,
              "metadata": {"cluster": 3}, "params": {"subscribers": 100, "rate": 50}}
    assert trial_from_raw(fanout) is None


def test_the_broker_cost_counts_the_publishing_script_and_each_subscribed_instance() -> None:
    counters = {"acked": 1000, "delivered": 2000, "lost": 0, "duplicated": 0,
                "out_of_order": 0, "publish_failed": 0, "connect_failures": 0}
    raw = {"version": 1, "transport": "ws", "scenario": "backplane", "trial": 1,
           "metadata": {"cluster": 3}, "params": {"subscribers": 2, "window": 8, "payload": 64},
           "histograms": {"latency": histogram(1000)},
           "counters": counters,
           "window": {"start": 0.0, "measure": 0.0, "end": 1.0},
           "resources": {"broker": [[0.0, 0.0, 0.0], [0.5, 0.04, 0.0], [1.0, 0.08, 0.0]]}}
    (check,) = cluster_checks([raw])
    spec = RedisSpec()
    assert check.metric == "broker µs / message"
    predicted = (spec.ops_per_publish + 2) / spec.ops_per_s_per_node * 1e6
    assert check.predicted == pytest.approx(predicted)  # two subscribers: two instances of three
    assert check.measured == pytest.approx(80.0)
    assert check.passed is None and "8 tick(s)" in check.note  # 0.08 s: coarser than 10%
    busier = {**raw, "resources": {"broker": [[0.0, 0.0, 0.0], [1.0, 1000 * predicted / 1e6 * 3,
                                               0.0]]}}  # fmt: skip
    (judged,) = cluster_checks([busier])
    assert judged.passed is False and judged.error == pytest.approx(1 / 3 - 1)  # 3x dearer
    cheaper = {**raw, "counters": {**counters, "acked": 3000},
               "resources": {"broker": [[0.0, 0.0, 0.0], [1.0, 3000 * predicted / 1e6, 0.0]]}}
    (right,) = cluster_checks([cheaper])
    assert right.passed and right.error == pytest.approx(0.0)


def test_a_transport_passes_on_the_cluster_when_every_judged_row_does(failover_raw: Raw) -> None:
    from sobranie_bench.capacity.reality import Validation
    from sobranie_bench.capacity.tables import cluster_verdicts, validation_rows

    rows = validation_rows(Validation(tuple(cluster_checks([failover_raw(True)])), {}))
    assert cluster_verdicts(rows) == {"ws": False}  # the 2 duplicates: the model says none
    clean = [r for r in rows if r[2] != "duplicated"]
    assert cluster_verdicts(clean) == {"ws": all(r[7] == "pass" for r in clean if r[7])}
    assert cluster_verdicts([r[:7] + ("",) + r[8:] for r in rows]) == {}  # none judged
