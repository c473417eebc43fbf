"""The SimPy instance model: M/M/1 and M/M/c, Little's law, exact fan-out counts."""

from __future__ import annotations

import pytest

from sobranie_bench.capacity.instance import JobStream, simulate_instance
from sobranie_bench.capacity.validation import ValidationRow, validate

# (servers, utilisation, measured messages). At these lengths the batch-means half-width is
# about 3% at rho = 0.8. A sweep over seeds 1-6 kept every error within 4.5% of Erlang C and
# Little's law within 1e-5; a 95% interval misses the true mean about 1 run in 20 by design
# (3 of 18 in the sweep), so the seed is fixed and the test is deterministic.
CASES = ((1, 0.5, 200_000), (1, 0.8, 400_000), (2, 0.8, 400_000))
SEED = 1


@pytest.fixture(scope="module")
def rows() -> list[ValidationRow]:
    return [row for c, rho, jobs in CASES for row in validate(((c, rho),), jobs=jobs, seed=SEED)]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_mean_wait_matches_erlang_c_within_5_percent(rows: list[ValidationRow], index: int) -> None:
    row = rows[index]
    assert row.utilisation <= 0.8
    assert abs(row.relative_error) <= 0.05, row


@pytest.mark.parametrize("index", range(len(CASES)))
def test_analytic_mean_inside_the_95_percent_interval(
    rows: list[ValidationRow], index: int
) -> None:
    row = rows[index]
    low, high = row.ci95
    assert low <= row.analytic_mean_wait <= high, row


@pytest.mark.parametrize("index", range(len(CASES)))
def test_littles_law_within_1_percent(rows: list[ValidationRow], index: int) -> None:
    row = rows[index]
    assert row.littles_law_error <= 0.01
    assert row.time_average_in_system == pytest.approx(row.arrival_rate_times_sojourn, rel=0.01)


def test_fan_out_counts_are_exact() -> None:
    stream = JobStream("room of 6", 100.0, 1e-4, fanout=((5, 1.0),), delivers=True)
    result = simulate_instance([stream], cores=2, jobs=2_000, seed=1)
    assert result.deliveries == 5 * 2_000
    assert result.inbound_p95_s is None


def test_client_messages_deliver_nothing() -> None:
    result = simulate_instance([JobStream("inbound", 100.0, 1e-4)], cores=1, jobs=1_000, seed=1)
    assert result.deliveries == 0
    assert result.delivery_p95_s is None
    assert result.inbound_p95_s is not None


def test_bigger_fan_out_delays_the_last_recipients() -> None:
    def p95(units: int) -> float:
        # Same CPU per second either way: fewer, bigger messages versus many small ones.
        stream = JobStream("x", 1000.0 / units, 1e-4, fanout=((units, 1.0),), delivers=True)
        delivery = simulate_instance([stream], cores=1, jobs=5_000, seed=3).delivery_p95_s
        assert delivery is not None
        return delivery

    assert p95(50) > p95(1)


def test_same_seed_same_result() -> None:
    streams = [
        JobStream("inbound", 5000.0, 1e-4),
        JobStream("fan", 500.0, 1e-5, ((20, 1.0),), True),
    ]
    assert simulate_instance(streams, jobs=5_000, seed=9) == simulate_instance(
        streams, jobs=5_000, seed=9
    )


def test_a_message_needs_work() -> None:
    with pytest.raises(ValueError):
        JobStream("empty", 1.0, 1e-4, fanout=((0, 1.0),))
