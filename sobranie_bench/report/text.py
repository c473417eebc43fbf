"""Markdown building blocks shared by the report's outputs: tables, stars, numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from sobranie_bench.report.data import Measured

NOT_MEASURED = "not measured"
CLIENT_BOUND_MARK = "†"
CLIENT_BOUND_NOTE = (f"{CLIENT_BOUND_MARK} client-bound: the harness, not the server, was the "
                     "limit in that run; the figure is a bound on the server, not its value.")
SATURATED_MARK = "⚠ saturated"
NOISY_MARK = "⚠ noisy"
FLAGS_NOTE = (f"{SATURATED_MARK}: the achieved rate fell below 95% of the offered one, or "
              "latency rose through the measured window; the latency is queueing, not service. "
              f"{NOISY_MARK}: other processes than the server and the harness took more than a "
              "quarter of the machine's cores during the measurement.")


def marks(fig: Measured | None) -> str:
    """The flags of a figure, to put beside its value or its stars (" † ⚠ saturated")."""
    if fig is None:
        return ""
    return "".join(f" {mark}" for flag, mark in ((fig.client_bound, CLIENT_BOUND_MARK),
                                                  (fig.saturated, SATURATED_MARK),
                                                  (fig.noisy, NOISY_MARK)) if flag)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def stars(n: int | None) -> str:
    """``★★★☆☆`` for 3 (None: not rated)."""
    if n is None:
        return "—"
    return "★" * n + "☆" * (5 - n)


RATIO_BANDS = (1.5, 3.0, 6.0, 12.0)
"""Ratio-to-best limits for 5, 4, 3 and 2 stars; anything worse gets 1."""


def stars_from_ratio(ratio: float) -> int:
    """5 stars within 1.5x of the best, then one star less per doubling (3x, 6x, 12x)."""
    for i, limit in enumerate(RATIO_BANDS):
        if ratio < limit:
            return 5 - i
    return 1


def geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def us(value: float | None) -> str:
    """Microseconds as a readable duration."""
    if value is None:
        return NOT_MEASURED
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1000:
        return f"{value / 1000:.1f} ms"
    return f"{value:.0f} µs"


def ms(value_us: float | None) -> str:
    """Microseconds shown in milliseconds with three significant digits."""
    if value_us is None:
        return NOT_MEASURED
    if value_us >= 1e6:
        return f"{value_us / 1e6:.3g} s"
    return f"{value_us / 1000:.3g} ms"


def num(value: float | None, digits: int = 3) -> str:
    """A count or rate with thousands separators and ``digits`` significant digits."""
    if value is None:
        return NOT_MEASURED
    if float(value).is_integer():
        return f"{value:,.0f}"  # a count: 3, not 3.00
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def nbytes(value: float | None) -> str:
    if value is None:
        return NOT_MEASURED
    if abs(value) >= 1024 ** 3:
        return f"{value / 1024 ** 3:.1f} GiB"
    if abs(value) >= 1024 * 1024:
        return f"{value / 1024 / 1024:.1f} MiB"
    if abs(value) >= 10 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value:,.0f} B"


def measured(fig: Measured | None, fmt: str = "num") -> str:
    """A figure formatted by ``fmt`` (us, ms, num, bytes), with the spread when trials differ
    and its flags' marks (client-bound, saturated, noisy)."""
    if fig is None:
        return NOT_MEASURED
    show = {"us": us, "ms": ms, "num": num, "bytes": nbytes}[fmt]
    text = show(fig.value)
    if fig.bootstrapped and fig.ci_high > fig.ci_low:
        text += f" (95% CI {show(fig.ci_low)}–{show(fig.ci_high)}, {fig.trials} trials)"
    elif fig.trials > 1 and fig.high > fig.low:
        text += f" ({show(fig.low)}–{show(fig.high)}, {fig.trials} trials)"
    return text + marks(fig)


def ratio(value: float | None) -> str:
    """``1.07×``, ``13.4×``, ``34,185×``."""
    if value is None:
        return NOT_MEASURED
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×" if value < 100 else f"{value:,.0f}×"
