"""TLS 1.3 on every TCP transport: the local CA, ``serve --tls`` servers, clients on https://
and wss:// that trust only that CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from sobranie_bench.clients import ClientError
from sobranie_contract import tls
from tests.conftest import http_url, next_of

TCP_TRANSPORTS = ["ws", "ws-websockets", "sse", "longpoll", "socketio", "socketio-polling",
                  "ws@elysia", "sse@elysia", "longpoll@elysia"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tls.CertPaths:
    return tls.ensure(tmp_path_factory.mktemp("tls"))


def test_certificates_are_made_once_and_cover_the_hosts(tmp_path: Path) -> None:
    first = tls.ensure(tmp_path)
    ca_before, cert_before = first.ca.read_bytes(), first.cert.read_bytes()
    again = tls.ensure(tmp_path)
    assert (again.ca.read_bytes(), again.cert.read_bytes()) == (ca_before, cert_before)
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert oct(first.key.stat().st_mode & 0o777) == "0o600"
    wider = tls.ensure(tmp_path, ["10.77.0.1"])  # a new host: a new certificate, same CA
    assert wider.ca.read_bytes() == ca_before and wider.cert.read_bytes() != cert_before


def test_server_context_is_tls13_without_tickets(certs: tls.CertPaths) -> None:
    ctx = tls.server_context(certs)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.num_tickets == 0
    assert tls.server_context(certs, resumption=True).num_tickets > 0


@pytest.mark.parametrize("transport", TCP_TRANSPORTS)
async def test_every_tcp_transport_speaks_tls(transport, certs, start_server, clients) -> None:
    from sobranie_bench.clients import TRANSPORTS

    server = await start_server(TRANSPORTS[transport].server, tls=certs)
    assert server.url.startswith("https://") and server.endpoints["ca"] == str(certs.ca)
    sub = clients(transport, server.url, "bob", ca=str(certs.ca))
    pub = clients(transport, server.url, "alice", ca=str(certs.ca))
    await sub.connect(["chat:tls"])
    await pub.connect()
    await sub.echo({"x": 1})
    assert (await next_of(sub, "echo"))["data"] == {"x": 1}
    await pub.publish("chat:tls", {"n": 1})
    assert (await next_of(sub, "message", "chat:tls"))["data"] == {"n": 1}


@pytest.mark.parametrize("transport", ["ws", "sse", "ws@elysia", "sse@elysia"])
async def test_a_client_that_does_not_trust_the_ca_is_refused(transport, certs, tmp_path,
                                                              start_server, clients) -> None:
    from sobranie_bench.clients import TRANSPORTS

    server = await start_server(TRANSPORTS[transport].server, tls=certs)
    other = tls.ensure(tmp_path / "other")  # another CA: not the one that signed the server
    client = clients(transport, server.url, ca=str(other.ca), reconnect=False)
    with pytest.raises(ClientError, match="(?i)certificate"):
        await client.connect()
    plain = clients(transport, server.url.replace("https://", "http://"), reconnect=False)
    with pytest.raises(ClientError):
        await plain.connect()
    assert http_url(server).startswith("https://")


@pytest.mark.parametrize("transport", ["ws", "sse", "ws@elysia", "sse@elysia"])
async def test_the_relay_counts_one_more_round_trip_for_tls(transport, certs, start_server,
                                                           clients) -> None:
    import time
    from urllib.parse import urlsplit

    from sobranie_bench.clients import TRANSPORTS
    from sobranie_bench.harness.proxy import CountingProxy

    trips = {}
    for encrypted in (False, True):
        server = await start_server(TRANSPORTS[transport].server,
                                    tls=certs if encrypted else None)
        url = urlsplit(server.url)
        proxy = CountingProxy(url.hostname or "", url.port or 0)
        port = await proxy.start()
        try:
            client = clients(transport, f"{url.scheme}://127.0.0.1:{port}", ca=str(certs.ca))
            await client.connect()
            trips[encrypted] = proxy.counts.round_trips_before(time.monotonic())
        finally:
            await client.close()
            await proxy.stop()
    assert trips == {False: 1, True: 2}


async def _handshake(url: str, ca: Path, *, tls12: bool = False) -> tuple[str, bool]:
    """TLS version and whether a session ticket came, for one HTTP request to ``url``."""
    import asyncio
    from urllib.parse import urlsplit

    ctx = tls.client_context(ca)
    if tls12:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=ctx)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")  # tickets come before
        sslobj = writer.get_extra_info("ssl_object")
        return sslobj.version(), bool(sslobj.session and sslobj.session.has_ticket)
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["http", "elysia"])
async def test_servers_speak_tls13_only_and_issue_tickets_only_when_asked(kind, certs,
                                                                          start_server) -> None:
    server = await start_server(kind, tls=certs)
    assert await _handshake(server.url, certs.ca) == ("TLSv1.3", False)
    with pytest.raises(OSError):  # an alert (SSLError) or a reset, as the stack refuses it
        await _handshake(server.url, certs.ca, tls12=True)
    resuming = await start_server(kind, tls=certs, tls_resumption=True)
    assert await _handshake(resuming.url, certs.ca) == ("TLSv1.3", True)
