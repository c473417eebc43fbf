"""The recorder's percentiles agree with numpy's on the same samples (HDR, 3 digits)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sobranie_bench.harness.recorder import Recorder, decode, merge, stats


def _close(hdr: float, exact: float) -> bool:
    return abs(hdr - exact) <= max(1.0, exact * 2e-3)  # 3 significant digits


def _matches(hdr: float, values: list[int], p: float) -> bool:
    """Within HDR precision of numpy's percentile, allowing one rank either side (the two
    definitions of "the value at a percentile" may pick neighbouring samples)."""
    ordered = np.sort(np.asarray(values))
    k = int(np.searchsorted(np.arange(1, len(ordered) + 1), p / 100 * len(ordered)))
    lo, hi = ordered[max(k - 1, 0)], ordered[min(k + 1, len(ordered) - 1)]
    exact = float(np.percentile(ordered, p, method="inverted_cdf"))
    return _close(hdr, exact) or (lo * (1 - 2e-3) - 1 <= hdr <= hi * (1 + 2e-3) + 1)


@pytest.mark.parametrize("dist", ["uniform", "lognormal", "bimodal"])
def test_percentiles_match_numpy(dist: str) -> None:
    rng = random.Random(42)
    if dist == "uniform":
        values = [rng.randint(1, 100_000) for _ in range(20_000)]
    elif dist == "lognormal":
        values = [int(rng.lognormvariate(7, 1.2)) + 1 for _ in range(20_000)]
    else:
        values = [rng.randint(100, 200) if rng.random() < 0.98 else rng.randint(900_000,
                                                                                1_100_000)
                  for _ in range(20_000)]
    rec = Recorder(measure_from_ns=0)
    for v in values:
        rec.record_ns(0, v * 1000)
    s = stats(decode(rec.encoded()["measured"]))
    for p in (50, 90, 99, 99.9):
        assert _matches(s[f"p{p:g}"], values, p), p
    assert _close(s["max"], float(max(values)))
    assert s["count"] == len(values)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=300))
def test_any_samples_match_numpy(values: list[int]) -> None:
    rec = Recorder(measure_from_ns=0)
    for v in values:
        rec.record_ns(0, v * 1000)
    s = stats(decode(rec.encoded()["measured"]))
    for p in (50, 99):
        assert _matches(s[f"p{p:g}"], values, p)


def test_warmup_is_recorded_apart_by_intended_time() -> None:
    rec = Recorder(measure_from_ns=10_000_000)
    assert rec.record_ns(5_000_000, 6_000_000) is False  # intended before: warm-up
    assert rec.record_ns(10_000_000, 12_000_000) is True
    enc = rec.encoded()
    assert stats(decode(enc["warmup"]))["count"] == 1
    assert stats(decode(enc["measured"]))["count"] == 1


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(7)
    parts, whole = [Recorder(), Recorder(), Recorder()], Recorder()
    for _ in range(3000):
        v = rng.randint(1, 10**7)
        rng.choice(parts).record_ns(0, v * 1000)
        whole.record_ns(0, v * 1000)
    merged = merge([p.encoded()["measured"] for p in parts])
    assert stats(merged) == stats(decode(whole.encoded()["measured"]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=3_600_000_000), min_size=1, max_size=400))
def test_stats_are_hdrhs_own_mean_and_percentiles(values: list[int]) -> None:
    # stats() reads the counts array at once; hdrh walks it value by value: the same figures
    rec = Recorder(measure_from_ns=0)
    for v in values:
        rec.record_ns(0, v * 1000)
    hist = decode(rec.encoded()["measured"])
    s = stats(hist)
    assert s["mean"] == hist.get_mean_value() and s["max"] == hist.get_max_value()
    for p in (50.0, 90.0, 95.0, 99.0, 99.9):
        assert s[f"p{p:g}"] == hist.get_value_at_percentile(p), p
