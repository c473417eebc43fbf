"""What only the Bun + Elysia server has: its start-up, and its Redis broker speaking the Python
one's keys, script and envelope, so Python and Elysia instances make one cluster.

The contract itself runs over Elysia in test_transports.py (ws@elysia, sse@elysia,
longpoll@elysia). Redis is the session's own (``redis_url`` in tests/conftest.py), one
namespace per test.
"""

from __future__ import annotations

import json
import secrets

import aiohttp
import psutil
import pytest

from servers import elysia
from servers.brokers import make_broker
from servers.run import Options
from sobranie_bench.cluster import Cluster, free_port
from tests.conftest import SECRET, messages, metrics_text, next_of, token


@pytest.fixture
def namespaced(redis_url: str) -> str:
    """The session's Redis under a fresh namespace (keys of one test never meet another's)."""
    return f"{redis_url}?namespace=t{secrets.token_hex(4)}"


async def test_serve_elysia_reports_its_own_process(start_server):
    server = await start_server("elysia")
    pid = int(server.endpoints["pid"])
    assert psutil.Process(pid).name().startswith("bun")
    text = await metrics_text(server.url)
    assert "process_cpu_seconds_total " in text and "process_resident_memory_bytes " in text
    async with aiohttp.ClientSession() as session, session.get(server.url + "/healthz") as resp:
        assert (await resp.json())["server"].startswith("sobranie-elysia/")
    await server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_a_broker_it_cannot_reach_is_one_clear_error():
    port = free_port()  # nothing listens there
    with pytest.raises(elysia.ElysiaUnavailable):
        await elysia.start(Options(secret=SECRET, broker=f"redis://127.0.0.1:{port}/0"))


async def test_origin_allow_list_and_cors(start_server):
    server = await start_server("elysia", origins=("https://sobranie.example",))
    url = server.url.replace("http", "ws", 1) + "/ws?token=" + token("alice")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, origin="https://evil.example")
        assert refused.value.status == 403
        async with session.ws_connect(url, origin="https://sobranie.example") as ws:
            assert json.loads((await ws.receive()).data)["type"] == "hello"
        headers = {"Origin": "https://sobranie.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "authorization, content-type"}
        async with session.options(server.url + "/publish", headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://sobranie.example"
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            assert "Access-Control-Allow-Credentials" not in resp.headers
        async with session.options(server.url + "/publish",
                                   headers={**headers, "Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
        for path in ("/healthz", "/metrics"):  # on every answer, set by a handler or not
            async with session.get(server.url + path,
                                   headers={"Origin": "https://sobranie.example"}) as resp:
                assert resp.headers["Access-Control-Allow-Origin"] == "https://sobranie.example"
        async with session.post(server.url + "/publish", json={"channel": "a", "data": 1},
                                headers={"Origin": "https://evil.example",
                                         "Authorization": f"Bearer {token('a')}"}) as resp:
            assert resp.status == 403  # refused before it runs: nothing was published
        async with session.post(server.url + "/publish", json={"channel": "a", "data": 1},
                                headers={"Authorization": f"Bearer {token('a')}"}) as resp:
            assert (await resp.json())["id"] == 1


async def test_python_and_elysia_share_ids_history_and_delivery(namespaced, start_server,
                                                                clients):
    """One channel over one Redis: published alternately through a Python and an Elysia
    instance, every subscriber on either gets every id once, in order, with the same bytes;
    a resume on one reads history written through the other."""
    python = await start_server("ws", broker=namespaced)
    bun = await start_server("elysia", broker=namespaced)
    subs = [clients("ws", python.url, "bob"), clients("ws@elysia", bun.url, "eve"),
            clients("sse@elysia", bun.url, "sam")]
    for sub in subs:  # subscribed once acked (connect alone returns at the hello)
        await sub.connect()
        await sub.subscribe("chat:mixed")
    pubs = [clients("ws", python.url, "alice"), clients("ws@elysia", bun.url, "alice")]
    for pub in pubs:
        await pub.connect()
    ids = [await pubs[i % 2].publish("chat:mixed", {"n": i, "text": "é✓"}) for i in range(30)]
    assert ids == list(range(1, 31))
    got = [await messages(sub, 30, "chat:mixed") for sub in subs]
    for envelopes in got:
        assert [m["id"] for m in envelopes] == ids
        assert [m["data"] for m in envelopes] == [{"n": i, "text": "é✓"} for i in range(30)]
        assert envelopes == got[0]

    late = clients("ws@elysia", bun.url, "zoe")
    await late.connect()
    await late.subscribe("chat:mixed", since=25)
    assert [m["id"] for m in await messages(late, 5, "chat:mixed")] == [26, 27, 28, 29, 30]
    broker = make_broker(namespaced)
    try:  # the keys are the Python broker's own
        assert await broker.last_id("chat:mixed") == 30
        assert [m.id for m in await broker.history("chat:mixed", 28)] == [29, 30]
    finally:
        await broker.purge()  # type: ignore[attr-defined]
        await broker.close()


async def test_presence_crosses_between_python_and_elysia(namespaced, start_server, clients):
    python = await start_server("ws", broker=namespaced)
    bun = await start_server("elysia", broker=namespaced)
    watcher = clients("ws", python.url, "watcher")
    await watcher.connect()
    await watcher.subscribe("presence")  # acked once Redis confirmed the subscription
    carol = clients("ws@elysia", bun.url, "carol")
    await carol.connect()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "online")
    await carol.close()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "offline")


async def test_mixed_cluster_behind_haproxy_delivers_in_order(namespaced, haproxy, clients):
    """Python and Elysia instances behind one HAProxy: clients through the balancer land on
    either, and every one of them gets the same ids in the same order."""
    async with Cluster(2, namespaced, kind="http,elysia", secret=SECRET,
                       haproxy=haproxy) as cluster:
        servers = set()
        async with aiohttp.ClientSession() as session:
            for instance in cluster.instances:
                async with session.get(instance.url + "/healthz") as resp:
                    servers.add((await resp.json())["server"].split("/")[0])
        assert servers == {"sobranie-aiohttp", "sobranie-elysia"}
        subs = [clients(t, cluster.lb_url, f"u{i}")
                for i, t in enumerate(["ws", "ws", "sse", "sse", "longpoll", "longpoll"])]
        for sub in subs:
            await sub.connect()
            await sub.subscribe("feed:mixed")
        hellos = {sub.conn for sub in subs}
        assert len(hellos) == len(subs)
        pubs = [clients("ws", cluster.lb_url, "p1"), clients("ws", cluster.lb_url, "p2")]
        for pub in pubs:
            await pub.connect()
        ids = [await pubs[i % 2].publish("feed:mixed", i) for i in range(20)]
        assert ids == list(range(1, 21))
        for sub in subs:
            got = await messages(sub, 20, "feed:mixed")
            assert [(m["id"], m["data"]) for m in got] == list(zip(ids, range(20), strict=True))


BARE_ELYSIA = """
import { Elysia } from "elysia";
const app = new Elysia().ws("/echo", { message(ws, m) { ws.send(m); } })
  .listen({ port: 0, hostname: "127.0.0.1" });
const pkg = await import("elysia/package.json", { with: { type: "json" } });
console.log(JSON.stringify({ port: app.server.port, elysia: pkg.default.version }));
"""


async def test_elysia_core_serves_websockets_without_the_plugin():
    """The record the report cites (plugin-check.json): the pinned Elysia, with no
    @elysiajs/websocket installed, serves a WebSocket through its own ``.ws()``."""
    import asyncio

    record = json.loads((elysia.HERE / "plugin-check.json").read_text())
    package = json.loads((elysia.HERE / "package.json").read_text())
    lock = json.loads((elysia.HERE / "package-lock.json").read_text())
    assert package["dependencies"]["elysia"] == record["elysia"]["pinned"]
    assert not [p for p in lock["packages"] if p.endswith(record["plugin"]["name"])]
    proc = await asyncio.create_subprocess_exec(
        str(elysia.BUN), "-e", BARE_ELYSIA, cwd=elysia.HERE, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert info["elysia"] == record["elysia"]["pinned"]
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"ws://127.0.0.1:{info['port']}/echo") as ws:
            await ws.send_str("through Elysia.ws()")
            assert (await ws.receive(timeout=10)).data == "through Elysia.ws()"
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
async def test_the_harness_starts_one_elysia_server_as_bun_itself(tls: bool) -> None:
    """No Python process between the runner and Bun: the process it started is the server it
    samples, and it announces what ``serve elysia`` would (the CA to trust over TLS)."""
    from sobranie_bench.harness.runner import Plan, spawn_server
    from sobranie_contract import tls as tlsfiles

    server = await spawn_server("elysia", Plan(tls=tls, secret=SECRET))
    try:
        assert server.pid == server.process.pid and server.sampled() == {"server": server.pid}
        assert psutil.Process(server.pid).cmdline()[1:3] == ["run", str(elysia.MAIN)]
        assert server.url.startswith("https://" if tls else "http://")
        ssl = tlsfiles.client_context(server.client_options["ca"]) if tls else True
        async with aiohttp.ClientSession() as session, \
                session.get(f"{server.url}/healthz", ssl=ssl) as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
    finally:
        await server.stop()
    assert server.process.returncode is not None
