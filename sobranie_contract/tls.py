"""TLS for the TCP transports: a local certificate authority and a server certificate signed by
it, made with ``cryptography``, kept out of git and made again when missing or near expiry.

Every transport pays the encryption it pays in production (METHOD.md 12): QUIC (WebTransport)
and DTLS (WebRTC) always encrypt, so the TCP transports (WebSocket, SSE, long-polling,
Socket.IO) run over TLS 1.3 when a server is started with ``--tls`` and the harness with
``run --tls``::

    paths = ensure()                      # CertPaths(ca, cert, key), in default_dir()
    server_context(paths)                 # TLS 1.3 only, no session tickets
    client_context(paths.ca)              # trusts only our CA, checks the host name

Session resumption is off by default on both sides: the server issues no tickets, so every
connect pays a full handshake (the worst case a reconnect storm meets). ``resumption=True``
makes the server issue tickets (what production servers do); a client then resumes only if
its TLS stack keeps the session (browsers do; asyncio's streams keep none).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
"""Names and addresses every server certificate covers."""
SERVER_DAYS = 30
"""Validity of a server certificate; made again in its last RESERVE_DAYS."""
CA_DAYS = 3650
RESERVE_DAYS = 2


@dataclass(frozen=True, slots=True)
class CertPaths:
    ca: Path
    """The CA certificate (PEM) clients trust."""
    cert: Path
    """The server certificate (PEM), signed by the CA."""
    key: Path
    """The server's private key (PEM, unencrypted, mode 0600)."""


def default_dir() -> Path:
    """``$SOBRANIE_TLS_DIR``, else ``$XDG_CACHE_HOME/sobranie-bench/tls`` (``~/.cache/...``)."""
    if env := os.environ.get("SOBRANIE_TLS_DIR"):
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sobranie-bench" / "tls"


def ensure(directory: Path | None = None, hosts: Iterable[str] = ()) -> CertPaths:
    """The CA and a server certificate for ``DEFAULT_HOSTS`` + ``hosts`` in ``directory``,
    made when missing, near expiry or not covering every host (a lock keeps concurrent
    callers from writing at once)."""
    directory = directory or default_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    wanted = sorted({*DEFAULT_HOSTS, *hosts})
    with _locked(directory / ".lock"):
        if not _valid(paths.ca, ()):
            _make_ca(directory)
        if not _valid(paths.cert, wanted):
            _make_server(paths, wanted)
    return paths


def server_context(paths: CertPaths, *, resumption: bool = False) -> ssl.SSLContext:
    """TLS 1.3 only, our certificate; no session tickets unless ``resumption``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(paths.cert, paths.key)
    ctx.set_alpn_protocols(["http/1.1"])
    if not resumption:
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def client_context(ca: Path | str | None = None) -> ssl.SSLContext:
    """TLS 1.3, trusting ``ca`` (default: our CA in ``default_dir()``), host name checked."""
    ctx = ssl.create_default_context(cafile=str(ca or default_dir() / "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --- making the files ----------------------------------------------------------------------

def _valid(path: Path, hosts: Iterable[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left < dt.timedelta(days=RESERVE_DAYS):
        return False
    if not hosts:
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    covered = {*san.get_values_for_type(x509.DNSName),
               *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}
    return all(_normal(h) in covered for h in hosts)


def _normal(host: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    return host


def _make_ca(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sobranie lab local CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(directory / "ca.key", _key_pem(key), secret=True)
    _write(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").unlink(missing_ok=True)  # signed by the old CA


def _make_server(paths: CertPaths, hosts: list[str]) -> None:
    ca_cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    ca_key = serialization.load_pem_private_key((paths.ca.parent / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(paths.key, _key_pem(key), secret=True)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
