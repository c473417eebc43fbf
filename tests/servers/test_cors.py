"""CORS over real sockets: the ``--origin`` allow-list is the CORS list (servers/cors.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import UNIT, http_url, token

PAGE = "http://page.example"
FOREIGN = "http://evil.example"
ACAO = "Access-Control-Allow-Origin"


async def _request(method: str, url: str, **kwargs: object) -> aiohttp.ClientResponse:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UNIT)) as session,
                session.request(method, url, **kwargs) as resp):  # type: ignore[arg-type]
        await resp.read()
        return resp


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.mark.parametrize("kind,path", [("http", "/publish"), ("http", "/echo"),
                                       ("http", "/subscribe"), ("webrtc", "/webrtc/offer")])
async def test_preflight_is_answered_for_an_allowed_origin_and_refused_for_another(
        start_server, kind, path):
    server = await start_server(kind, origins=(PAGE,))
    ok = await _request("OPTIONS", server.url + path, headers=_preflight(PAGE))
    assert ok.status == 204
    assert ok.headers[ACAO] == PAGE
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in ok.headers
    assert ok.headers["Vary"] == "Origin"
    refused = await _request("OPTIONS", server.url + path, headers=_preflight(FOREIGN))
    assert refused.status == 403
    assert ACAO not in refused.headers


async def test_an_allowed_page_reads_publish_acks_and_errors(start_server):
    server = await start_server("http", origins=(PAGE,))
    body = {"channel": "chat:cors", "data": "hi", "ref": "p1"}
    auth = {"Authorization": f"Bearer {token('alice')}"}
    ok = await _request("POST", server.url + "/publish", json=body,
                        headers={"Origin": PAGE, **auth})
    assert ok.status == 200 and ok.headers[ACAO] == PAGE
    unauthorized = await _request("POST", server.url + "/publish", json=body,
                                  headers={"Origin": PAGE})
    assert unauthorized.status == 401 and unauthorized.headers[ACAO] == PAGE
    foreign = await _request("POST", server.url + "/publish", json=body,
                             headers={"Origin": FOREIGN, **auth})
    assert foreign.status == 403 and ACAO not in foreign.headers
    direct = await _request("POST", server.url + "/publish", json=body, headers=auth)
    assert direct.status == 200 and ACAO not in direct.headers  # no Origin: not a browser page


async def test_an_sse_stream_carries_the_header_and_a_foreign_one_never_opens(start_server):
    server = await start_server("http", origins=(PAGE,))
    url = f"{server.url}/sse?channels=chat:cors&token={token('alice')}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=UNIT)) as session:
        async with session.get(url, headers={"Origin": PAGE}) as resp:
            assert resp.status == 200 and resp.headers[ACAO] == PAGE
            line = await asyncio.wait_for(resp.content.readline(), UNIT)
            assert line.startswith((b"id:", b"event:"))
        async with session.get(url, headers={"Origin": FOREIGN}) as resp:
            assert resp.status == 403


async def test_an_empty_allow_list_answers_every_origin_with_a_star(start_server):
    server = await start_server("http")
    resp = await _request("GET", f"{server.url}/poll?channels=chat:cors&timeout=0"
                          f"&token={token('alice')}", headers={"Origin": FOREIGN})
    assert resp.status == 200 and resp.headers[ACAO] == "*"
    assert "Vary" not in resp.headers


async def test_socketio_keeps_a_single_allow_origin_header(start_server):
    server = await start_server("socketio", origins=(PAGE,))
    resp = await _request("GET", f"{server.url}/socket.io/?EIO=4&transport=polling"
                          f"&token={token('alice')}", headers={"Origin": PAGE})
    assert resp.status == 200
    assert resp.headers.getall(ACAO) == [PAGE]
    same_origin = await _request("GET", f"{server.url}/socket.io/?EIO=4&transport=polling"
                                 f"&token={token('alice')}")  # a page's own polling GET
    assert same_origin.status == 200
    foreign = await _request("GET", f"{server.url}/socket.io/?EIO=4&transport=polling"
                             f"&token={token('alice')}", headers={"Origin": FOREIGN})
    assert foreign.status == 403


async def test_the_webtransport_cert_hash_follows_the_allow_list(start_server):
    server = await start_server("webtransport", origins=(PAGE,))
    base = http_url(server)
    ok = await _request("GET", base + "/wt-cert-hash", headers={"Origin": PAGE})
    assert ok.status == 200 and ok.headers[ACAO] == PAGE
    foreign = await _request("GET", base + "/wt-cert-hash", headers={"Origin": FOREIGN})
    assert foreign.status == 403
