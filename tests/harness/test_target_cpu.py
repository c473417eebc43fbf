"""Server CPU for ``run --target``: every server of ours exposes Prometheus' standard process
lines on /metrics, and the harness reads the target's CPU from them, or samples the process
given by ``--server-pid``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sobranie_bench.harness import figures, results
from sobranie_bench.harness.runner import HarnessError, Plan, Server, run_plan, spawn_server
from sobranie_bench.harness.sampler import MetricsSampler
from tests.conftest import SECRET

PYTHON_SERVERS = ("http", "ws-websockets", "webtransport", "socketio", "webrtc")


@pytest.mark.parametrize("kind", PYTHON_SERVERS)
async def test_every_python_server_exposes_process_cpu_and_memory(kind: str) -> None:
    server = await spawn_server(kind, Plan(tls=False, secret=SECRET))
    try:
        async with MetricsSampler(server.url) as sampler:
            for _ in range(100):
                if len(sampler.samples) >= 2:
                    break
                await asyncio.sleep(0.1)
    finally:
        await server.stop()
    assert len(sampler.samples) >= 2, f"{kind}: no process_cpu_seconds_total on /metrics"
    first, last = sampler.samples[0], sampler.samples[-1]
    assert 0 < first.cpu_s <= last.cpu_s
    assert last.rss > 10 * 1024 * 1024  # a Python process: tens of MiB


@pytest.fixture
def target() -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(spawn_server("http", Plan(tls=False, secret=SECRET)))
    try:
        yield server
    finally:
        loop.run_until_complete(server.stop())
        loop.close()


def _echo_on(target: Server, out: Path, **plan: Any) -> dict[str, Any]:
    asyncio.run(run_plan(Plan(profile="ci", transports=("ws",), scenarios=("echo",), out=out,
                              secret=SECRET, timing=(0.2, 1.0), target=target.url, **plan)))
    (raw,) = results.load_raw(out)
    assert "error" not in raw, raw.get("error")
    return raw


def test_a_target_s_cpu_comes_from_its_metrics(target: Server, tmp_path: Path) -> None:
    raw = _echo_on(target, tmp_path)
    assert raw["server_cpu_source"] == "metrics"
    assert len(raw["resources"]["server"]) >= 3
    m = figures.metrics(raw)
    assert m["server_cpu_us_per_msg"][0] > 0 and m["server_cpu_cores"][0] > 0


def test_a_target_s_cpu_comes_from_its_pid(target: Server, tmp_path: Path) -> None:
    raw = _echo_on(target, tmp_path, server_pid=target.pid)
    assert "server_cpu_source" not in raw
    samples = raw["resources"]["server"]
    assert samples and all(len(s) > results.RUN_NS for s in samples)  # schedstat, as ours
    assert figures.metrics(raw)["server_cpu_us_per_msg"][0] > 0


async def test_a_server_pid_that_does_not_exist_is_a_clear_error(target: Server,
                                                                tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no such process"):
        await run_plan(Plan(transports=("ws",), scenarios=("echo",), out=tmp_path,
                            target=target.url, server_pid=2**22 + 12345))
