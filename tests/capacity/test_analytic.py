"""Closed forms against published values and an independent textbook formula."""

from __future__ import annotations

import math

import pytest

from sobranie_bench.capacity.analytic import (
    erlang_b,
    erlang_c,
    mm1_mean_sojourn,
    mm1_mean_wait,
    mmc_mean_sojourn,
    mmc_mean_wait,
    mmc_wait_quantile,
)


def erlang_c_by_sum(c: int, a: float) -> float:
    """The explicit-sum form of Erlang C (e.g. Kleinrock vol. 1, eq. 3.40)."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_two_servers_one_erlang_is_one_third() -> None:
    # C(2, 1) = (1/2 * 2) / (1 + 1 + 1) = 1/3 exactly.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)


def test_erlang_c_ten_servers_eight_erlangs_matches_tables() -> None:
    # Erlang C tables give P(wait) = 0.409 for 10 servers offered 8 erlangs.
    assert erlang_c(10, 8.0) == pytest.approx(0.4092, abs=5e-4)


def test_erlang_c_textbook_call_centre_example() -> None:
    # 120 arrivals/hour, 3 minutes each (6 erlangs), 10 servers: "the probability of
    # waiting is about 0.10" (a standard M/M/m exercise read off the Erlang C curve).
    assert erlang_c(10, 120 / 60 * 3) == pytest.approx(0.1013, abs=5e-4)


@pytest.mark.parametrize("c", [1, 2, 3, 5, 10, 20])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.8, 0.95])
def test_erlang_c_agrees_with_the_explicit_sum(c: int, rho: float) -> None:
    assert erlang_c(c, rho * c) == pytest.approx(erlang_c_by_sum(c, rho * c), rel=1e-9)


def test_erlang_c_stays_finite_for_thousands_of_servers() -> None:
    value = erlang_c(5000, 4900.0)
    assert 0.0 < value < 1.0


def test_single_server_waits_with_probability_rho() -> None:
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_b(1, 1.0) == pytest.approx(0.5)


def test_mmc_with_one_server_is_mm1() -> None:
    assert mmc_mean_wait(8.0, 10.0, 1) == pytest.approx(mm1_mean_wait(8.0, 10.0))
    assert mmc_mean_sojourn(8.0, 10.0, 1) == pytest.approx(mm1_mean_sojourn(8.0, 10.0))
    assert mm1_mean_wait(8.0, 10.0) == pytest.approx(0.4)  # rho / (mu - lambda)


def test_wait_quantile_inverts_the_tail() -> None:
    lam, mu, c = 16.0, 10.0, 2
    t = mmc_wait_quantile(lam, mu, c, 0.95)
    tail = erlang_c(c, lam / mu) * math.exp(-(c * mu - lam) * t)
    assert tail == pytest.approx(0.05)
    assert mmc_wait_quantile(1.0, 10.0, 2, 0.5) == 0.0  # most arrivals never wait


def test_unstable_queue_is_refused() -> None:
    with pytest.raises(ValueError, match="unstable"):
        erlang_c(2, 2.0)
    with pytest.raises(ValueError):
        mm1_mean_wait(10.0, 10.0)
