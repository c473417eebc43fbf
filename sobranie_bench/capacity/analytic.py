"""Closed-form queueing results the simulations are checked against.

Notation (Kleinrock, *Queueing Systems* vol. 1; Gross & Harris, *Fundamentals of Queueing
Theory*): arrivals are Poisson at rate ``lam`` per second, each of ``c`` identical servers
works at rate ``mu`` jobs per second (exponential service), the offered load is
``a = lam / mu`` erlangs and the utilisation ``rho = a / c`` must be below 1.

Erlang C is evaluated through the Erlang B recursion, which never forms ``a**c / c!`` and so
stays exact for thousands of servers.
"""

from __future__ import annotations

import math


def _check_stable(c: int, a: float) -> None:
    if c < 1:
        raise ValueError(f"need at least one server, got c={c}")
    if a < 0:
        raise ValueError(f"offered load must be non-negative, got a={a}")
    if a >= c:
        raise ValueError(f"unstable queue: offered load a={a} erlangs >= c={c} servers")


def erlang_b(c: int, a: float) -> float:
    """Probability that all ``c`` servers are busy in M/M/c/c (blocked calls are lost)."""
    if c < 0 or a < 0:
        raise ValueError("c and a must be non-negative")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with ``a`` erlangs offered to ``c`` servers."""
    _check_stable(c, a)
    b = erlang_b(c, a)
    return c * b / (c - a * (1.0 - b))


def mmc_mean_wait(lam: float, mu: float, c: int) -> float:
    """Mean time in queue (before service starts) of M/M/c, in the time unit of 1/``lam``."""
    a = lam / mu
    return erlang_c(c, a) / (c * mu - lam)


def mmc_mean_sojourn(lam: float, mu: float, c: int) -> float:
    """Mean time in system (queue + service) of M/M/c."""
    return mmc_mean_wait(lam, mu, c) + 1.0 / mu


def mmc_wait_quantile(lam: float, mu: float, c: int, q: float) -> float:
    """The ``q``-quantile of the M/M/c wait: P(W > t) = C(c, a) * exp(-(c*mu - lam) * t)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    p_wait = erlang_c(c, lam / mu)
    if p_wait <= 1.0 - q:
        return 0.0
    return math.log(p_wait / (1.0 - q)) / (c * mu - lam)


def mm1_mean_wait(lam: float, mu: float) -> float:
    """Mean time in queue of M/M/1: rho / (mu - lam)."""
    _check_stable(1, lam / mu)
    return (lam / mu) / (mu - lam)


def mm1_mean_sojourn(lam: float, mu: float) -> float:
    """Mean time in system of M/M/1: 1 / (mu - lam)."""
    _check_stable(1, lam / mu)
    return 1.0 / (mu - lam)
