"""Measure what the capacity model is calibrated from and validated against.

Harness runs into one results directory (``PASSES``), one trial each, taking turns: the
``calibrate`` profile's fit points (echo at four rates and fan-out at three sizes, 3 trials of
30 s each; 3 capacity trials stepping subscribers up to their knee at sizes the held-out
trials do not step to) and the ``holdout`` profile's points the fit never sees (two echo
rates and a fan-out size between the fit's, 3 trials each, judged on their median: one 8 s
trial of ws echo spread ±12% about its point's median, a coin flip against a ±15% threshold;
3 capacity trials, the knee however far up it is, judged on their median knee). The host is recorded
next to them (CPU model, cores, load before and after), because the machine is part of the
measurement. ``quick`` measures 8 s windows instead of 30 s: a shorter run has a better
chance of a quiet machine, and its record says it was quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sobranie_bench.harness.runner import Plan, count_points, run_plan
from sobranie_bench.harness.sampler import cpu_model

FIT_PROFILE, HOLDOUT_PROFILE = "calibrate", "holdout"
TRANSPORTS = ("ws", "sse")
ROUNDS = 3
PASSES = (  # (profile, scenarios, trial): the fit points and what the fit must predict, in turns
    # echo at four rates and fan-out at three sizes (the bootstrap resamples their trials),
    # and two echo rates and a fan-out size between them (judged on their trials' median):
    # one trial of each in turn, so that a machine drifting over the run moves both alike
    # (measured: the held-out passes, run after the fit's, +7% CPU per delivery)
    *((profile, ("echo", "fanout"), trial) for trial in range(1, ROUNDS + 1)
      for profile in (FIT_PROFILE, HOLDOUT_PROFILE)),
    # the capacity scenario: the fit's own trials (their steps up to the knee at sizes the
    # held-out trials do not step to: the cost curve and latency floor of a process that
    # served the steps before) in turns with 3 held-out trials, judged on the median of their
    # knees (one trial's is too noisy: ws 1,598 and 2,163 subscribers in two quiet trials);
    # 3 fit trials, not one: a whole trial's steps sit apart from another's (ws 37 against
    # 48-54 µs per delivery at 100-150 subscribers), so one fit trial missed the held-out
    # steps' CPU by up to 24%
    *((profile, ("capacity",), trial) for trial in range(1, ROUNDS + 1)
      for profile in (HOLDOUT_PROFILE, FIT_PROFILE)),
)
QUICK_TIMING = (1.0, 8.0)  # --quick: (warm-up, duration) s: 8 s trials, not 30 s
HOST_FILE = "calibration-host.json"
DEFAULT_OUT = Path("results/calibrate")


@dataclass(frozen=True)
class Measurement:
    """Where one calibration measurement went."""

    out: Path
    """Results root: ``runs/<run-id>/`` raw files, ``summary.csv``, the host record."""
    fit_runs: tuple[Path, ...]
    """Run directories of the fit points (echo and fan-out; the capacity scenario's steps)."""
    holdout_runs: tuple[Path, ...]
    """Run directories of the held-out points and of the capacity scenario's knee."""


def cpu_pressure() -> float | None:
    """Share of the last 60 s some runnable task waited for a CPU (PSI ``some avg60``, 0..1);
    None where the kernel does not expose it."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    return float(fields["avg60"]) / 100 if "avg60" in fields else None


def host_record() -> dict[str, Any]:
    """The machine as it is now: CPU model, cores, load averages, CPU pressure, when."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "cpu_pressure": cpu_pressure(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def wait_for_quiet(
    max_load: float,
    timeout_s: float,
    on_wait: Callable[[float], None] = lambda load: None,
    poll_s: float = 10.0,
) -> bool:
    """Wait until the 1-minute load average is below ``max_load`` (True), or ``timeout_s``
    passed (False). The machine's other load is what the run-queue refusal catches: starting
    when it is low is the one thing a measurement can do about it."""
    deadline = time.monotonic() + timeout_s
    while (load := os.getloadavg()[0]) >= max_load:
        if time.monotonic() >= deadline:
            return False
        on_wait(load)
        time.sleep(poll_s)
    return True


def plans(
    out: Path, transports: Sequence[str] = TRANSPORTS, quick: bool = False
) -> tuple[Plan, ...]:
    """The harness plans of ``PASSES``, in order."""
    return tuple(Plan(profile=profile, transports=tuple(transports), scenarios=scenarios,
                      out=out, trials=1, first_trial=trial,
                      timing=QUICK_TIMING if quick else None)
                 for profile, scenarios, trial in PASSES)  # fmt: skip


def measure(
    out: Path = DEFAULT_OUT,
    transports: Sequence[str] = TRANSPORTS,
    quick: bool = False,
    on_result: Callable[[str, dict[str, Any] | None], None] = lambda label, raw: None,
) -> Measurement:
    """Run the fit points, then the held-out points and the knee, into ``out``; record the
    host."""
    before = host_record()
    runs = [(plan.profile, asyncio.run(run_plan(plan, on_result)))
            for plan in plans(out, transports, quick)]  # fmt: skip
    fit_runs = tuple(run for profile, run in runs if profile == FIT_PROFILE)
    holdout_runs = tuple(run for profile, run in runs if profile != FIT_PROFILE)
    record = {
        "before": before,
        "after": host_record(),
        "quick": quick,
        "fit_runs": [run.name for run in fit_runs],
        "holdout_runs": [run.name for run in holdout_runs],
    }
    (out / HOST_FILE).write_text(json.dumps(record, indent=1))
    return Measurement(out, fit_runs, holdout_runs)


def points(quick: bool = False, transports: Sequence[str] = TRANSPORTS) -> int:
    """Harness runs a measurement makes (for the progress bar)."""
    return sum(count_points(plan) for plan in plans(Path("."), transports, quick))
