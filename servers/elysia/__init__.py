"""The Bun + Elysia server (TypeScript in ``src/``), started as a subprocess.

``start(opts)`` is the ``serve elysia`` starter of :mod:`servers.run`: it spawns
``node_modules/.bin/bun run src/main.ts`` with the port, secret, broker, origins and limits,
waits for the JSON line the server prints once it listens, and returns a
:class:`~servers.run.Running` whose ``stop`` ends it (SIGTERM, then SIGKILL). The server's
own process id is in ``endpoints["pid"]``: that is the process to sample, not this one.
With ``opts.processes`` N > 1 (``serve elysia --processes N``) it starts N Bun servers on one
port (``--reuse-port``: the kernel spreads new connections over them; they share the broker)
and ``Running.pids`` lists them all. The harness starts a single one itself, from
:func:`command` and :func:`environment` (no Python process in between).
The Bun binary comes from the npm package ``bun`` that ``make setup`` installs here
(``npm ci``, listed in setup/npm.txt). See docs/elysia.md.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from servers.hub import SUITE_VERSION
from servers.run import Options, Running
from sobranie_contract import tokens

HERE = Path(__file__).resolve().parent
BUN = HERE / "node_modules" / ".bin" / "bun"
MAIN = HERE / "src" / "main.ts"
READY_SECONDS = 20.0
STOP_SECONDS = 5.0


class ElysiaUnavailable(RuntimeError):
    """Bun is not installed in servers/elysia, or the server did not come up."""


def command(opts: Options, port: int | None = None) -> list[str]:
    """The command line of a server with ``opts`` (the secret travels in the environment)."""
    limits = opts.limits
    port = opts.port if port is None else port
    args = [str(BUN), "run", str(MAIN), "--host", opts.host, "--port", str(port),
            "--broker", opts.broker or "memory", "--send-queue", str(limits.send_queue),
            "--max-envelope", str(limits.max_envelope), "--hard-frame", str(limits.hard_frame),
            "--rate", str(limits.rate), "--burst", str(limits.burst),
            "--flood", str(limits.flood), "--history-size", str(opts.history_size),
            "--history-bytes", str(limits.history_bytes),
            "--user-connections", str(limits.user_connections),
            "--user-rate", str(limits.user_rate), "--user-burst", str(limits.user_burst),
            "--user-channels", str(limits.user_channels),
            "--user-window", str(limits.user_window),
            "--header-timeout", str(limits.header_timeout),
            "--poll-idle", opts.extra.get("poll_idle", str(limits.idle)),
            "--server-name", f"sobranie-elysia/{SUITE_VERSION}", "--exit-with-stdin"]
    for origin in opts.origins:
        args += ["--origin", origin]
    if opts.processes > 1:
        args.append("--reuse-port")
    if opts.tls:  # serve --tls: the local CA's certificate (sobranie_contract.tls)
        args += ["--cert", str(opts.tls.cert), "--key", str(opts.tls.key),
                 "--ca", str(opts.tls.ca)]
        if opts.tls_resumption:
            args.append("--tls-resumption")
    elif opts.extra.get("cert") and opts.extra.get("key"):
        args += ["--cert", opts.extra["cert"], "--key", opts.extra["key"]]
    return args


def require_bun() -> None:
    """ElysiaUnavailable, saying how to install it, when Bun is not installed here."""
    if not BUN.exists():
        raise ElysiaUnavailable(f"{BUN.relative_to(HERE.parent.parent)} is missing: run "
                                "`make setup` (npm ci in servers/elysia)")


def environment(opts: Options) -> dict[str, str]:
    """The environment of a server with ``opts`` (its JWT secret travels here, not in argv);
    it runs in this folder (cwd)."""
    return {**os.environ, "SOBRANIE_JWT_SECRET": tokens.secret_from_env(opts.secret)}


async def start(opts: Options) -> Running:
    require_bun()
    # the first picks the port (or takes --port), the others join it; one at a time, so each
    # is listening before the next one's warm-up
    procs: list[asyncio.subprocess.Process] = []

    async def stop() -> None:
        await asyncio.gather(*(_stop(p) for p in procs))

    try:
        proc, info = await _spawn(opts, None)
        procs.append(proc)
        port = int(info["url"].rsplit(":", 1)[1])
        for _ in range(opts.processes - 1):
            procs.append((await _spawn(opts, port))[0])
    except ElysiaUnavailable:
        await stop()
        raise
    endpoints = {k: str(v) for k, v in info.items() if k not in ("url", "kind")}
    endpoints.update(opts.tls_endpoints())
    pids = tuple(p.pid for p in procs) if len(procs) > 1 else ()
    return Running(info["url"], stop, endpoints, pids)


async def _spawn(opts: Options, port: int | None) -> tuple[asyncio.subprocess.Process,
                                                           dict[str, Any]]:
    """One Bun server, once it printed its JSON line."""
    # stdin is a pipe the server watches: it exits with this process, even a killed one
    proc = await asyncio.create_subprocess_exec(
        *command(opts, port), cwd=HERE, env=environment(opts), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_SECONDS)
        info: dict[str, Any] = json.loads(line)
    except (TimeoutError, ValueError):
        await _stop(proc)
        raise ElysiaUnavailable(f"the Elysia server did not start (exit code {proc.returncode}"
                                "; its errors are above)") from None
    return proc, info


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_SECONDS)
        except TimeoutError:
            proc.kill()
    await proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()
