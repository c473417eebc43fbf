"""The harness past one process's limits: preflight refusals that name the limit and the fix,
failures sorted by cause, connections spread over source addresses, workers and server
processes (small counts: the 100k ladder is a benchmark, not a test)."""

from __future__ import annotations

import asyncio
import errno
import json
import resource
import subprocess
import sys

import pytest

from sobranie_bench import scaledoc
from sobranie_bench.clients.base import ClientError
from sobranie_bench.harness.runner import HarnessError, Plan, preflight, run_plan
from sobranie_bench.harness.scenarios.connections import (
    HostLimits,
    cause,
    source_addresses,
)
from sobranie_bench.harness.scenarios.connections import preflight as check
from tests.conftest import UNIT

HERE = HostLimits(nofile=20000, ports=28232, port_range="32768-60999", somaxconn=4096)


def point(**kw):
    return {"connections": 100000, "connect_rate": 1500, "hold": 1.0, **kw}


def test_preflight_names_the_limit_and_the_fix():
    url = "http://127.0.0.1:1"
    why = check(point(), workers=1, processes=6, url=url, limits=HERE)
    assert "per worker" in why and "20,000" in why and "--set workers=6" in why
    why = check(point(workers=6), workers=1, processes=1, url=url, limits=HERE)
    assert "per server process" in why and "--set processes=6" in why
    why = check(point(workers=6, processes=6), workers=1, processes=1, url=url, limits=HERE)
    assert "ephemeral ports" in why and "32768-60999" in why and "sources=4" in why
    assert check(point(workers=6, processes=6, sources=8), workers=1, processes=1, url=url,
                 limits=HERE) is None
    why = check(point(workers=6, processes=6, sources=8, connect_rate=30000), workers=1,
                processes=1, url=url, limits=HERE)
    assert "somaxconn" in why
    why = check(point(workers=6, sources=8), workers=1, processes=None,
                url="http://10.1.2.3:80", limits=HERE)
    assert "loopback" in why, "a --target's processes are its own; source addresses are not"
    assert check({"connections": 300, "connect_rate": 300}, workers=1, processes=1, url=url,
                 limits=HERE) is None


def test_a_plan_beyond_the_limits_refuses_before_it_starts(tmp_path):
    plan = Plan(profile="ci", transports=("ws",), scenarios=("connections",), out=tmp_path,
                overrides=(("connections", 10**6),))
    with pytest.raises(HarnessError, match=r"connections .*needs .* open files per worker"):
        preflight(plan)
    with pytest.raises(HarnessError, match="per worker"):
        asyncio.run(run_plan(plan))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json")), \
        "nothing ran"


def test_the_cli_refuses_in_one_line_with_the_fix(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sobranie_bench.cli", "run", "--scenarios", "connections",
         "--transports", "ws", "--out", str(tmp_path), "--set", "connections=1000000"],
        capture_output=True, text=True, timeout=12 * UNIT, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "hard nofile limit" in done.stderr, done.stderr


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), "refused"),
    (ClientError("cannot reach http://x: [Errno 111] Connect call failed ('127.0.0.1', 1)"),
     "refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset by peer"), "reset"),
    (ClientError("connection lost during the upgrade: None"), "reset"),
    (TimeoutError(), "timeout"),
    (OSError(errno.EMFILE, "Too many open files"), "fd_limit"),
    (ClientError("cannot reach http://x: [Errno 24] Too many open files"), "fd_limit"),
    (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), "ports"),
    (ClientError("WebSocket upgrade refused: HTTP 503 Service Unavailable: {...}"),
     "server_full"),
    (ValueError("what"), "other"),
])
def test_failures_are_sorted_by_cause(exc, expected):
    assert cause(exc) == expected


def test_source_addresses_only_on_loopback():
    assert source_addresses("http://127.0.0.1:9", 3) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_addresses("http://127.0.0.1:9", 1) == [None]
    assert source_addresses("http://10.0.0.1:9", 3) == [None]


def _tiny_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


def test_a_ladder_over_processes_workers_and_sources_holds_every_connection(tmp_path):
    """600 idle WebSockets over 2 harness workers, 3 server processes (one port, our own
    Redis) and 3 source addresses: all held, counted at once, no failure; the run records
    every server process's samples."""
    done = subprocess.run(
        [sys.executable, "-m", "sobranie_bench.cli", "run", "--scenarios", "connections",
         "--transports", "ws,sse", "--no-tls", "--out", str(tmp_path), "--set",
         "connections=600", "--set", "connect_rate=600", "--processes", "3", "--workers", "2",
         "--set", "hold=1.0"],
        capture_output=True, text=True, timeout=24 * UNIT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "never retrieved" not in done.stderr
    raws = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json") if p.name != "run.json"]
    assert len(raws) == 2
    for raw in raws:
        c = raw["counters"]
        assert (c["connected"], c["held"], c["failures"]) == (600, 600, 0), c
        assert c["peak_open"] == 600
        servers = [n for n in raw["resources"] if n.startswith("server")]
        assert len(servers) == 3 and raw["processes"] == 3
        assert raw["parts"] == 2
    (run_dir,) = (tmp_path / "runs").iterdir()
    table = scaledoc.render(run_dir, None)  # docs/scale.md's figures come from such a run
    for transport in ("ws", "sse"):
        assert f"| {transport} | 600 | 3 | 2 | 1 | 600 | 600 | 600 | 0 (-) |" in table


def test_a_server_out_of_files_is_counted_as_such_not_as_spam(tmp_path):
    """The harness itself at a tiny limit: the connects beyond it fail as ``fd_limit`` (or the
    server's clear refusal), reported as counts, with no unretrieved-exception lines."""
    code = (
        "import asyncio, json, sys\n"
        "from sobranie_bench.harness.runner import Plan, run_plan\n"
        f"plan = Plan(profile='ci', transports=('ws',), scenarios=('connections',), "
        f"out=__import__('pathlib').Path({str(tmp_path)!r}), tls=False, "
        "overrides=(('connections', 150), ('connect_rate', 1000), ('hold', 0.5)))\n"
        "import sobranie_bench.harness.runner as r\n"
        "r.preflight = lambda plan: None  # this test wants to hit the limit\n"
        "asyncio.run(run_plan(plan))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=12 * UNIT, check=False, preexec_fn=_tiny_limit)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "never retrieved" not in done.stderr
    (raw,) = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")
              if p.name != "run.json"]
    c = raw["counters"]
    assert c["failures"] > 0 and c["connected"] + c["failures"] == 150
    assert c["failed_fd_limit"] + c["failed_server_full"] == c["failures"], c
