"""Latency recording into HDR histograms (microseconds, 3 significant digits).

Every value is kept (as a histogram bucket), warm-up apart from measurement, and the encoded
histogram goes into the raw results so any percentile can be recomputed later.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: a stall never falls off the end
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def decode(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode())


@dataclass
class Recorder:
    """Two histograms: what was *intended* before ``measure_from_ns`` is warm-up. With
    ``measure_until_ns`` the measured values also go to three histograms, one per third of the
    measured window by intended time, so latency rising through the window shows."""

    measure_from_ns: int = 0
    measure_until_ns: int = 0
    warmup: HdrHistogram = field(default_factory=new_histogram)
    measured: HdrHistogram = field(default_factory=new_histogram)
    thirds: tuple[HdrHistogram, ...] = field(
        default_factory=lambda: tuple(new_histogram() for _ in range(3)))
    in_window: int = 0
    """Values whose *arrival* fell inside the measured window: the achieved rate, which a
    server that keeps up holds at the offered one whatever its latency."""

    def record_ns(self, start_ns: int, end_ns: int | None = None) -> bool:
        """Record ``end - start`` (end defaults to now), start being the *intended* time;
        True when it counted as a measured value."""
        end = time.monotonic_ns() if end_ns is None else end_ns
        us = min(max((end - start_ns) // 1000, LOWEST_US), HIGHEST_US)
        measured = start_ns >= self.measure_from_ns
        (self.measured if measured else self.warmup).record_value(us)
        span = self.measure_until_ns - self.measure_from_ns
        self.in_window += span > 0 and self.measure_from_ns <= end < self.measure_until_ns
        if measured and span > 0:
            third = min(2, (start_ns - self.measure_from_ns) * 3 // span)
            self.thirds[third].record_value(us)
        return measured

    def encoded(self) -> dict[str, Any]:
        out: dict[str, Any] = {"warmup": self.warmup.encode().decode(),
                               "measured": self.measured.encode().decode()}
        if self.measure_until_ns > self.measure_from_ns:
            out["thirds"] = [h.encode().decode() for h in self.thirds]
        return out


def merge(encoded: list[str]) -> HdrHistogram:
    total = new_histogram()
    for item in encoded:
        total.add(decode(item))
    return total


@functools.lru_cache(maxsize=8)
def _cells(length: int, half_magnitude: int, unit_magnitude: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The lowest value of every cell of a histogram's counts array and the size of its range
    of equivalent values (hdrh's ``get_value_from_index`` and the range it stands for)."""
    index = np.arange(length, dtype=np.int64)
    half = 1 << half_magnitude
    bucket = (index >> half_magnitude) - 1
    sub = (index & (half - 1)) + half
    first = bucket < 0  # the first bucket uses its lower half too
    sub, bucket = np.where(first, sub - half, sub), np.where(first, 0, bucket)
    return sub << (bucket + unit_magnitude), np.int64(1) << (bucket + unit_magnitude)


def stats(hist: HdrHistogram, percentiles: tuple[float, ...] = PERCENTILES
          ) -> dict[str, float]:
    """count, mean, ``percentiles`` (``p50``...) and max of a histogram, in microseconds:
    hdrh's own ``get_mean_value`` and ``get_value_at_percentile``, computed over the counts
    array at once (hdrh walks it in Python: about 50 ms a histogram; the report reads
    thousands)."""
    total = hist.get_total_count()
    if total == 0:
        return {"count": 0}
    length = min(hist.counts_len, hist.encoder.payload.counts_len)  # past it: zeros
    counts = np.ctypeslib.as_array(hist.counts)[:length].astype(np.int64)
    lowest, size = _cells(length, hist.sub_bucket_half_count_magnitude, hist.unit_magnitude)
    # the mean weighs each cell by the middle of its range (hdrh's median-equivalent value)
    out: dict[str, float] = {"count": total,
                             "mean": float(int((counts * (lowest + (size >> 1))).sum())) / total,
                             "max": hist.get_max_value()}
    cumulative = np.cumsum(counts)
    for p in percentiles:  # the first cell whose running count reaches p% (at least one)
        at = int(np.searchsorted(cumulative, max(int(min(p, 100.0) * total / 100 + 0.5), 1)))
        out[f"p{p:g}"] = int(lowest[at] + size[at] - 1)  # the cell's highest equivalent value
    return out
