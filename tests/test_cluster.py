"""Real clusters: server processes over the shared Redis / NATS, HAProxy in front.

Killing an instance during steady fan-out must lose no acknowledged message for clients that
reconnect through the balancer and resume (ws, sse, long-polling). Needs haproxy (``make
setup``); Redis and NATS with JetStream are the session's own (``redis_url``, ``nats_url``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from servers.brokers import make_broker
from sobranie_bench.cluster import Cluster, ClusterError, haproxy_config
from sobranie_bench.harness import figures, results
from sobranie_bench.harness.runner import HarnessError, Plan, run_plan
from tests.conftest import SECRET, UNIT, messages


@pytest.fixture
async def cluster(request: pytest.FixtureRequest,
                  haproxy: str) -> AsyncIterator[Callable[..., Any]]:
    """``await make(n, kind, **Cluster kwargs)`` -> a started Cluster on a fresh namespace;
    stopped (every process reaped) and its namespace purged afterwards."""
    made: list[Cluster] = []

    async def make(instances: int, kind: str = "redis", **kwargs: Any) -> Cluster:
        url = f"{request.getfixturevalue(f'{kind}_url')}?namespace=t{secrets.token_hex(4)}"
        c = Cluster(instances, url, secret=SECRET, **kwargs)
        made.append(c)
        await c.start()
        return c

    yield make
    for c in made:
        processes = [i.process for i in c.instances]
        await c.stop()
        assert all(p.returncode is not None for p in processes)
        broker = make_broker(c.broker)
        await broker.purge()  # type: ignore[attr-defined]
        await broker.close()


@pytest.mark.parametrize("kind", ["redis", "nats"])
async def test_published_on_one_instance_reaches_the_others_and_the_balancer(kind, cluster,
                                                                              clients):
    c = await cluster(3, kind)
    pub = clients("ws", c.instances[0].url, "alice")
    subs = [clients("ws", c.instances[1].url, "bob"), clients("sse", c.instances[2].url, "eve"),
            clients("longpoll", c.lb_url, "lb")]
    for sub in subs:
        await sub.connect(["chat:cluster"])
    await pub.connect()
    ids = [await pub.publish("chat:cluster", i) for i in range(15)]
    assert ids == list(range(1, 16))
    for sub in subs:
        got = await messages(sub, 15, "chat:cluster")
        assert [m["id"] for m in got] == ids
        assert [m["data"] for m in got] == list(range(15))


async def test_the_balancer_spreads_and_sticks(cluster):
    c = await cluster(2)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as fresh:
        servers = set()
        for _ in range(4):
            async with fresh.get(f"{c.lb_url}/healthz") as resp:
                assert resp.status == 200
                servers.add(resp.cookies["SRV"].value)
        assert servers == {"s1", "s2"}, "round-robin over both instances"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as sticky:
        async with sticky.get(f"{c.lb_url}/healthz") as resp:
            first = resp.cookies["SRV"].value
        for _ in range(3):
            async with sticky.get(f"{c.lb_url}/healthz") as resp:
                assert resp.status == 200 and "SRV" not in resp.cookies, f"stays on {first}"


def namespaced(url: str) -> str:
    return f"{url}?namespace=t{secrets.token_hex(4)}"


async def cluster_run(tmp_path: Path, broker: str, instances: int, transport: str,
                      scenario: str, timing: tuple[float, float], **params: Any
                      ) -> dict[str, Any]:
    """One harness run of ``scenario`` against a fresh cluster; its raw result, with the
    summary's metrics under ``"metrics"``. A namespaced broker URL is purged afterwards."""
    plan = Plan(transports=(transport,), scenarios=(scenario,), cluster=instances,
                broker=broker, out=tmp_path, timing=timing, tls=False, secret=SECRET,
                overrides=tuple(params.items()))
    try:
        run_dir = await run_plan(plan)
    finally:
        if "namespace=" in broker:
            store = make_broker(broker)
            await store.purge()  # type: ignore[attr-defined]
            await store.close()
    (raw,) = results.load_raw(run_dir)
    assert "error" not in raw, raw.get("error")
    return {**raw, "metrics": {k: v for k, (v, _unit) in figures.metrics(raw).items()}}


@pytest.mark.parametrize("transport", ["ws", "sse", "longpoll"])
async def test_killing_an_instance_loses_no_acknowledged_message(transport, redis_url, haproxy,
                                                                 tmp_path):
    raw = await cluster_run(tmp_path, namespaced(redis_url), 3, transport, "failover",
                            (0.0, 3.0), subscribers=9, rate=40, kill_after=1.0)
    c, m = raw["counters"], raw["metrics"]
    assert c["acked"] > 0 and c["publish_failed"] == 0
    assert c["cut_off"] >= 1, "round-robin put clients on the killed instance"
    assert c["not_recovered"] == 0 and m["recovery_max_s"] > 0
    assert (c["lost"], c["duplicated"], c["out_of_order"]) == (0, 0, 0)


async def test_failover_without_jitter_recovers_everyone_and_loses_nothing(redis_url, haproxy,
                                                                        tmp_path):
    raw = await cluster_run(tmp_path, namespaced(redis_url), 3, "ws", "failover", (0.0, 3.0),
                            subscribers=9, rate=40, kill_after=1.0, jitter=False)
    c = raw["counters"]
    assert c["cut_off"] >= 1 and c["not_recovered"] == 0
    assert (c["lost"], c["duplicated"]) == (0, 0)


async def test_fanout_in_a_cluster_records_each_hop_and_the_brokers_cost(haproxy, tmp_path):
    """``--broker redis``: the cluster's own Redis, sampled like the servers."""
    raw = await cluster_run(tmp_path, "redis", 2, "ws", "fanout", (0.2, 1.0),
                            subscribers=6, rate=50)
    m = raw["metrics"]
    assert "broker" in raw["resources"] and m["broker_cpu_us_per_msg"] > 0
    assert m["latency_local_count"] > 0 and m["latency_remote_count"] > 0
    assert m["lost"] == 0 and m["published"] > 0


async def test_backplane_is_closed_loop_and_in_order(nats_url, haproxy, tmp_path):
    raw = await cluster_run(tmp_path, namespaced(nats_url), 2, "ws", "backplane", (0.2, 1.0),
                            subscribers=4, window=4)
    m = raw["metrics"]
    assert m["acked_per_s"] > 0 and m["lost"] == 0 and m["out_of_order"] == 0


async def test_cluster_scenarios_need_a_cluster(tmp_path):
    assert not {"failover", "backplane"} & {s.name for _t, s, _p, _n in Plan().points()}
    assert {"failover", "backplane"} <= {s.name for _t, s, _p, _n in Plan(cluster=2).points()}
    with pytest.raises(HarnessError, match="failover needs a cluster: add --cluster 2"):
        await run_plan(Plan(scenarios=("failover",), out=tmp_path))


async def test_a_cluster_of_many_needs_a_shared_broker():
    with pytest.raises(ClusterError, match="shared broker"):
        Cluster(2, "memory")


def test_haproxy_config_keeps_streams_open_and_sticky():
    cfg = haproxy_config(["127.0.0.1:1", "127.0.0.1:2"], host="127.0.0.1", port=3)
    for line in ("bind 127.0.0.1:3", "timeout tunnel 1h", "cookie SRV insert indirect nocache",
                 "http-check send meth GET uri /healthz", "option http-no-delay",
                 "server s2 127.0.0.1:2 cookie s2"):
        assert line in cfg
    assert "compression" not in cfg
    timeout = int(cfg.split("timeout server ")[1].split("s")[0])
    assert timeout > 60, "longer than the longest long-poll"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sobranie_bench.cli", "cluster", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


async def test_cluster_up_prints_urls_and_stops_everything_on_sigterm(haproxy):
    """``--broker redis``: the cluster starts a Redis of its own and stops it with the rest."""
    proc = _cli("up", "--instances", "2", "--broker", "redis", "--json", "--jwt-secret", SECRET)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 6 * UNIT)
        info = json.loads(line)
        assert [set(i) for i in info["instances"]] == [{"url", "pid"}] * 2
        broker_port = int(info["broker"].rsplit(":", 1)[1].split("/")[0])
        assert info["broker"].startswith("redis://127.0.0.1:")
        (broker_pid,) = [c.pid for c in psutil.net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == broker_port]
        assert proc.pid in {p.pid for p in psutil.Process(broker_pid).parents()}  # ours
        async with aiohttp.ClientSession() as session, \
                session.get(f"{info['lb']}/healthz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 4 * UNIT) == 0
        for pid in [inst["pid"] for inst in info["instances"]] + [broker_pid]:
            assert not psutil.pid_exists(pid)
    finally:
        proc.kill()
        proc.wait()


def test_cluster_up_without_haproxy_says_how_to_get_it():
    proc = _cli("up", "--instances", "1", "--broker", "memory", "--haproxy", "/nonexistent/haproxy")
    try:
        _, err = proc.communicate(timeout=6 * UNIT)
    finally:
        proc.kill()
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: /nonexistent/haproxy not found: run `make setup`")
    assert "apt-get install haproxy" in last
