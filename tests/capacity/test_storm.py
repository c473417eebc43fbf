"""Reconnect storms: jitter and admission flatten the peak."""

from __future__ import annotations

import pytest

from sobranie_bench.capacity.storm import STRATEGIES, StormResult, storm

CLIENTS, INSTANCES, CAPACITY = 200_000, 10, 2_000.0  # 20k clients per instance, 10 s of work


@pytest.fixture(scope="module")
def results() -> dict[str, StormResult]:
    return {s: storm(CLIENTS, INSTANCES, s, CAPACITY, jitter_window_s=30) for s in STRATEGIES}


def test_full_jitter_has_a_lower_peak_than_no_jitter(results: dict[str, StormResult]) -> None:
    assert results["full_jitter"].peak_handshakes_per_s < results["none"].peak_handshakes_per_s
    assert results["full_jitter"].peak_attempts_per_s < results["none"].peak_attempts_per_s


def test_without_jitter_everyone_arrives_in_the_first_second(
    results: dict[str, StormResult],
) -> None:
    none = results["none"]
    assert none.peak_attempts_per_s == CLIENTS / INSTANCES
    assert none.peak_over_capacity == pytest.approx(10.0)
    assert none.wasted_share > 0  # timed-out attempts still cost the instance


def test_token_bucket_caps_what_reaches_the_instance(results: dict[str, StormResult]) -> None:
    bucket = results["token_bucket"]
    # one second of burst plus one second of refill at 80% of capacity
    assert bucket.peak_handshakes_per_s <= 2 * 0.8 * CAPACITY
    assert bucket.peak_attempts_per_s > bucket.peak_handshakes_per_s
    assert bucket.wasted_share == 0.0


def test_every_strategy_recovers(results: dict[str, StormResult]) -> None:
    for result in results.values():
        assert result.time_to_recover_s is not None
        assert result.time_to_recover_s >= 0.99 * CLIENTS / INSTANCES / CAPACITY
        assert result.connected_share[-1] == pytest.approx(1.0)


def test_a_small_storm_needs_no_retries() -> None:
    # 5000 clients per instance finish in 2.5 s, inside the 5 s timeout.
    result = storm(50_000, 10, "none", CAPACITY)
    assert result.attempts == 5_000
    assert result.time_to_recover_s == 3.0


def test_same_seed_same_storm() -> None:
    assert storm(20_000, 2, "full_jitter", seed=5) == storm(20_000, 2, "full_jitter", seed=5)


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError):
        storm(10, 1, "panic")  # type: ignore[arg-type]


def test_a_small_storm_is_resolved_below_a_second() -> None:
    coarse = storm(30, instances=2, strategy="none", connect_capacity_per_s=1000)
    fine = storm(30, instances=2, strategy="none", connect_capacity_per_s=1000, step_s=0.01)
    assert coarse.time_to_recover_s == 1.0
    assert fine.time_to_recover_s is not None and fine.time_to_recover_s < 0.1
