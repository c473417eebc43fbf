"""The ``sobranie-bench`` command: help, tokens, and ``serve`` as a real process (prints its URL,
answers /healthz, stops cleanly on SIGTERM and on SIGINT, says clearly when the port is taken)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from sobranie_bench import __version__
from sobranie_bench.cli import main
from tests.conftest import SECRET, UNIT

SERVE = [sys.executable, "-m", "sobranie_bench.cli", "serve"]


def test_console_script_is_installed_and_helps() -> None:
    script = Path(sys.executable).parent / "sobranie-bench"
    assert script.exists(), "pip install -e . installs the sobranie-bench script"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                         timeout=10 * UNIT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: sobranie-bench")
    for command in ("serve", "token"):
        assert command in out.stdout


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    assert "sobranie-bench" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"sobranie-bench {__version__}"


def test_serve_help_names_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from servers.run import SERVERS

    with pytest.raises(SystemExit) as exit:
        main(["serve", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for kind in ("ws", "ws-websockets", "sse", "longpoll", "http", *SERVERS):
        assert kind in out
    assert "--port" in out and "--json" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main([])
    assert exit.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_token_decodes_with_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "alice", "--jwt-secret", SECRET, "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60
    assert "scope" not in claims
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-of-at-least-32-bytes!", algorithms=["HS256"])


def test_server_token_has_server_scope(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "notifier", "--jwt-secret", SECRET, "--server"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["scope"]) == ("notifier", "server")


def test_token_reads_the_secret_from_the_environment(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOBRANIE_JWT_SECRET", SECRET)
    assert main(["token", "bob"]) == 0
    assert jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])["sub"] \
        == "bob"


# --- serve as a process -------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5 * UNIT)


def start(processes: list[subprocess.Popen[str]], *args: str) -> tuple[subprocess.Popen[str],
                                                                       str]:
    proc = subprocess.Popen([*SERVE, *args, "--port", "0", "--jwt-secret", SECRET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded by the pytest timeout if the server never starts
    assert line, f"no URL printed; stderr: {proc.stderr.read() if proc.stderr else ''}"
    return proc, line


def healthz(url: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{url}/healthz", timeout=UNIT) as resp:
        assert resp.status == 200
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["ws", "ws-websockets"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_prints_url_answers_health_and_stops_cleanly(
        kind: str, sig: signal.Signals, processes: list[subprocess.Popen[str]]) -> None:
    proc, line = start(processes, kind, "--json")
    info = json.loads(line)
    assert info["kind"] == kind
    assert info["url"].startswith("http://127.0.0.1:")
    assert info["ws"] == info["url"].replace("http", "ws", 1) + "/ws"
    assert healthz(info["url"])["status"] == "ok"  # also: the signal handlers are in place
    proc.send_signal(sig)
    assert proc.wait(5 * UNIT) == 0
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()


def test_serve_announces_in_plain_words(processes: list[subprocess.Popen[str]]) -> None:
    proc, line = start(processes, "sse")
    assert line.startswith("sobranie-bench serve sse: listening on http://127.0.0.1:")
    url = line.split("listening on ", 1)[1].split()[0]
    assert f"({url}/sse)" in line and "Ctrl-C to stop" in line
    assert healthz(url)["status"] == "ok"
    proc.terminate()
    assert proc.wait(5 * UNIT) == 0


@pytest.mark.parametrize("kind", ["ws", "ws-websockets"])
def test_serve_on_a_busy_port_says_so_in_one_line(kind: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*SERVE, kind, "--port", str(port), "--jwt-secret", SECRET],
                             capture_output=True, text=True, timeout=10 * UNIT, check=False)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in lines[0]
