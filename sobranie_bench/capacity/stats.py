"""Output analysis for the simulations: batch means and (weighted) percentiles.

Batch means (Law, *Simulation Modeling and Analysis*, ch. 9): split one long, correlated run
after its warm-up into ``k`` consecutive batches; the batch averages are close to independent,
so a Student-t interval over them is a valid confidence interval for the steady-state mean.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from statistics import NormalDist, fmean, stdev

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (any statistics table).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """Two-sided 95% Student-t quantile; Cornish-Fisher expansion beyond the table."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = NormalDist().inv_cdf(0.975)
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def batch_means_ci(values: Sequence[float], batches: int = 20) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% batch-means confidence interval ``(mean, low, high)``."""
    if batches < 2:
        raise ValueError("need at least two batches")
    size = len(values) // batches
    if size < 1:
        raise ValueError(f"{len(values)} values cannot fill {batches} batches")
    means = [fmean(values[i * size : (i + 1) * size]) for i in range(batches)]
    centre = fmean(means)
    half = t975(batches - 1) * stdev(means) / math.sqrt(batches)
    return centre, centre - half, centre + half


def percentile(values: Sequence[float], q: float, weights: Sequence[float] | None = None) -> float:
    """The ``q``-quantile (0..1) of ``values``, each counting ``weights[i]`` times (default 1)."""
    if not values:
        raise ValueError("no values")
    if weights is None:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]
    pairs = sorted(zip(values, weights, strict=True))
    cumulative = list(itertools.accumulate(w for _, w in pairs))
    index = bisect.bisect_left(cumulative, q * cumulative[-1])
    return pairs[min(index, len(pairs) - 1)][0]
