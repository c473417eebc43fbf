"""``sobranie-bench``: serve the reference servers, mint tokens, run benchmarks, plan capacity,
write the report. ``sobranie-bench COMMAND --help`` explains each command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sobranie_bench import __version__


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from servers import run
    from servers.hub import Limits
    from sobranie_contract import tls

    certs = tls.ensure(Path(args.tls_dir) if args.tls_dir else None, [args.host]) \
        if args.tls else None
    opts = run.Options(host=args.host, port=args.port, secret=args.jwt_secret,
                       origins=tuple(args.origin or ()), broker=args.broker,
                       limits=Limits(send_queue=args.send_queue),
                       tls=certs, tls_resumption=args.tls_resumption,
                       extra={k: v for k, v in vars(args).items()
                              if k in ("cert", "key", "quic_log", "static") and v})

    def announce(running: run.Running) -> None:
        endpoint = running.endpoints.get(args.kind, running.url)
        if args.json:
            pids = {"pids": list(running.pids)} if running.pids else {}
            print(json.dumps({"kind": args.kind, "url": running.url, **running.endpoints,
                              **pids}), flush=True)
        else:
            print(f"sobranie-bench serve {args.kind}: listening on {running.url} "
                  f"({endpoint}); Ctrl-C to stop", flush=True)

    try:
        if args.processes > 1:
            run.serve_processes(args.kind, opts, args.processes, announce)
        else:
            run.serve_forever(args.kind, opts, announce)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (broker unreachable, other start-up failures)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace) -> int:
    from sobranie_contract import tokens

    print(tokens.make_token(args.user, tokens.secret_from_env(args.jwt_secret), args.ttl,
                          scope="server" if args.server else None))
    return 0


def build_parser(*, all_commands: bool = True) -> argparse.ArgumentParser:
    """The whole CLI; without ``all_commands`` only serve and token, so that a server process
    does not import the harness's and the models' libraries (pandas, numpy, simpy: about
    50 MiB of RSS before the first connection)."""
    from servers.run import SERVERS

    parser = argparse.ArgumentParser(
        prog="sobranie-bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run a reference server in the foreground",
        description="Run a reference server until Ctrl-C / SIGTERM. ws, sse, longpoll and http "
                    "are the same aiohttp app (one port serves /ws, /sse, /poll, /publish, "
                    "/echo, /healthz, /metrics); ws-websockets is the websockets-library "
                    "server. Prints the URL once listening.")
    serve.add_argument("kind", choices=sorted(SERVERS), help="which server")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any)")
    serve.add_argument("--jwt-secret", help="HS256 secret (default: $SOBRANIE_JWT_SECRET, "
                                            "else the development secret)")
    serve.add_argument("--origin", action="append",
                       help="allowed page Origin, for WebSocket upgrades and CORS "
                            "(repeat; none = allow all)")
    serve.add_argument("--broker", default="memory",
                       help="memory (default), redis://host:port, redis+cluster://host:port "
                            "(a Redis Cluster: sharded pub/sub) or nats://host:port")
    serve.add_argument("--send-queue", type=int, default=4096,
                       help="envelopes queued per connection before a slow consumer is cut off")
    serve.add_argument("--cert", help="TLS certificate (WebTransport; default: self-signed)")
    serve.add_argument("--key", help="TLS private key (with --cert)")
    serve.add_argument("--quic-log", help="directory for qlog files (WebTransport)")
    serve.add_argument("--tls", action="store_true",
                       help="serve the TCP transports over TLS 1.3 (https://, wss://) with a "
                            "certificate of the local CA (made when missing; clients trust "
                            "its ca.pem, printed with --json). WebTransport and WebRTC "
                            "always encrypt")
    serve.add_argument("--tls-dir", help="where the local CA and certificate live (default: "
                                         "$SOBRANIE_TLS_DIR or ~/.cache/sobranie-bench/tls)")
    serve.add_argument("--tls-resumption", action="store_true",
                       help="issue TLS session tickets (default off: full handshakes)")
    serve.add_argument("--static", metavar="DIR",
                       help="also serve the pages in DIR at /web/ (e.g. web: the browser client "
                            "and demo; aiohttp-based servers)")
    serve.add_argument("--processes", type=int, default=1, metavar="N",
                       help="N processes on one port (SO_REUSEPORT; ws, sse, longpoll, http, elysia): "
                            "more connections than one process's open-file limit, more cores."
                            " N > 1 needs a shared --broker (redis, redis+cluster, nats)")
    serve.add_argument("--json", action="store_true",
                       help="print the URLs (and with --processes, the pids) as one JSON line")
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="print a JWT for a user",
                           description="Print an HS256 JWT whose sub is USER.")
    token.add_argument("user", help="user id (the token's sub)")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until expiry")
    token.add_argument("--jwt-secret", help="HS256 secret (default: $SOBRANIE_JWT_SECRET)")
    token.add_argument("--server", action="store_true",
                       help="a back-end token (scope=server) that may publish to user: channels")
    token.set_defaults(func=_token)

    for module in _COMMANDS if all_commands else ():
        __import__(module, fromlist=["register"]).register(sub)
    return parser


_COMMANDS: list[str] = ["sobranie_bench.harness.cli", "sobranie_bench.capacity.cli",
                        "sobranie_bench.cluster_cli", "sobranie_bench.report.cli"]
"""Modules whose ``register(subparsers)`` adds a command (harness, capacity, report...)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(all_commands=argv[:1] not in (["serve"], ["token"])).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
