"""The flags on every figure: ``saturated`` when the server cannot keep up with the offered
rate, ``noisy`` when other processes took a real share of the cores during the measurement."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sobranie_bench.harness import figures, results
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.runner import Plan, run_plan
from sobranie_bench.harness.sampler import Sampler
from tests.conftest import SECRET

BUSY_SECONDS = 60  # a busy loop ends by itself even if the test dies


def run(out: Path, **overrides: Any) -> dict[str, Any]:
    timing = overrides.pop("timing")
    plan = Plan(profile="ci", transports=("ws",), scenarios=("echo",), out=out, secret=SECRET,
                timing=timing, tls=False, overrides=tuple(overrides.items()))
    asyncio.run(run_plan(plan))
    (raw,) = results.load_raw(out)
    assert "error" not in raw, raw.get("error")
    return raw


def test_an_unreachable_offered_rate_is_flagged_saturated(tmp_path: Path) -> None:
    # a million echoes a second: no machine serves that from one harness process; 400
    # connections keep each one under the hub's per-connection rate limit
    raw = run(tmp_path, connections=400, rate=1_000_000, timing=(0.0, 0.05))
    assert results.achieved_share(raw) < results.SATURATED_SHARE
    assert results.flags(raw)["saturated"]
    rows = list(figures.summarize(raw))
    assert rows and all(r["saturated"] for r in rows)
    achieved = next(r for r in rows if r["metric"] == "achieved_percent_of_offered")
    assert achieved["value"] < 95


def _raw_with_thirds(p50s_us: list[int]) -> dict[str, Any]:
    rec = Recorder(measure_from_ns=0, measure_until_ns=3_000)
    for third, us in enumerate(p50s_us):
        for _ in range(10):
            rec.record_ns(third * 1_000, third * 1_000 + us * 1_000)
    return {"scenario": "churn", "params": {}, "counters": {},
            "histograms": {"latency": rec.encoded()}}


def test_latency_rising_through_the_window_is_saturated_and_a_flat_one_is_not() -> None:
    assert results.is_saturated(_raw_with_thirds([2_000, 9_000, 30_000]))
    assert not results.is_saturated(_raw_with_thirds([2_000, 2_100, 2_300]))
    assert not results.is_saturated(_raw_with_thirds([100, 200, 400]))  # under a millisecond


def _machine(busy_cores: float, ours_cores: float, cores: int = 2) -> dict[str, Any]:
    samples = [[t / 4, busy_cores * t / 4, ours_cores * t / 4] for t in range(9)]
    return {"window": {"measure": 0.0, "end": 2.0},
            "machine": {"cores": cores, "samples": samples}}


def test_noisy_is_other_processes_share_of_the_cores() -> None:
    assert results.others_cores(_machine(1.6, 0.6)) == pytest.approx(1.0)
    assert results.is_noisy(_machine(1.6, 0.6))  # 1 of 2 cores for others
    assert not results.is_noisy(_machine(1.6, 1.4))  # 0.2 of 2 cores
    assert not results.is_noisy({"window": {"measure": 0, "end": 1}})  # not sampled


@pytest.fixture
def busy_loops() -> Iterator[list[int]]:
    """Busy loops that are not ours: started through a parent that exits at once, so that
    they are no descendants of the harness (whose own processes never count as noise)."""
    count = (os.cpu_count() or 1) // 4 + 1  # more than a quarter of the cores
    loop = f"import time\nend = time.time() + {BUSY_SECONDS}\nwhile time.time() < end: pass"
    start = ("import subprocess, sys\n"
             f"p = subprocess.Popen([sys.executable, '-c', {loop!r}], start_new_session=True,\n"
             "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
             "print(p.pid)")
    pids = [int(subprocess.run([sys.executable, "-c", start], capture_output=True, text=True,
                               check=True).stdout) for _ in range(count)]
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_busy_loop_beside_the_measurement_marks_it_noisy(busy_loops: list[int],
                                                           tmp_path: Path) -> None:
    raw = run(tmp_path, connections=1, rate=50, timing=(0.3, 1.5))
    others = results.others_cores(raw)
    assert others is not None and others > results.NOISY_SHARE * raw["machine"]["cores"]
    assert results.flags(raw)["noisy"]
    assert all(r["noisy"] for r in figures.summarize(raw))


HELPER_CPU_S = 0.5
"""CPU seconds the re-parented helper burns before it reports."""
BROWSER = f"""
import os, sys, time
# like Chromium under Playwright: a session of its own, whose helper is forked twice and
# re-parented away from the tree (to init or a subreaper)
if os.fork() == 0:
    if os.fork() == 0:
        end = time.time() + {BUSY_SECONDS}
        while time.process_time() < {HELPER_CPU_S} and time.time() < end:
            pass
        print(os.getpid(), time.process_time(), flush=True)
        sys.stdin.read()  # until the test closes the pipe
    os._exit(0)
os.wait()
sys.stdin.read()
"""


def test_a_re_parented_helper_of_ours_is_ours_and_a_stranger_is_not(
        busy_loops: list[int]) -> None:
    sampler = Sampler({"harness": os.getpid()})
    sampler.mark()
    browser = subprocess.Popen([sys.executable, "-c", BROWSER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert browser.stdin is not None and browser.stdout is not None
        pid, used = browser.stdout.readline().split()
        helper = psutil.Process(int(pid))
        assert helper.ppid() != browser.pid and helper.pid not in {
            p.pid for p in psutil.Process().children(recursive=True)}  # out of our tree
        sampler.mark()
        assert helper.pid in sampler.ours.pids
        assert not sampler.ours.pids & set(busy_loops)
    finally:
        browser.communicate(timeout=30)  # stdin closed: the browser and its helper end
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        helper.wait(timeout=30)  # reaped by whoever adopted it (or left a zombie: still seen)
    sampler.mark()
    # the helper's CPU stays ours after it has gone (its parent was not ours: nobody of ours
    # holds it in their children's time)
    (_, _, first), (_, _, last) = sampler.machine[0], sampler.machine[-1]
    # /proc counts user and system time in whole clock ticks: each may be a tick short
    assert last - first >= float(used) - 2 / os.sysconf("SC_CLK_TCK")
