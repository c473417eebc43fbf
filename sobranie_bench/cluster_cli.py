"""``sobranie-bench cluster up``: a :class:`~sobranie_bench.cluster.Cluster` in the foreground.
Scale-out measurements are harness scenarios: ``sobranie-bench run --cluster N --broker redis``
(``fanout`` by hop, ``failover``, ``backplane``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from sobranie_bench.cluster import Cluster, ClusterError


def register(subparsers: Any) -> None:
    from servers.run import SERVERS

    parser = subparsers.add_parser(
        "cluster", help="run N instances over a shared broker behind HAProxy",
        description="up: start N server instances (each `sobranie-bench serve KIND --broker "
                    "URL`) and HAProxy in front, print the URLs, run until Ctrl-C / SIGTERM. "
                    "To measure a cluster: `sobranie-bench run --cluster N --broker redis` "
                    "(scenarios fanout, failover, backplane).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start a cluster in the foreground")
    _common(up, SERVERS)
    up.add_argument("--port", type=int, default=0, help="balancer port (default: any free)")
    up.add_argument("--haproxy", default="haproxy",
                    help="the HAProxy binary (default: haproxy on PATH or in /usr/sbin)")
    up.add_argument("--json", action="store_true",
                    help='print {"lb": URL, "instances": [{"url", "pid"}, ...]} on one line')
    up.set_defaults(func=_up)


def _common(parser: argparse.ArgumentParser, servers: dict[str, str]) -> None:
    parser.add_argument("--instances", type=int, default=2, help="server processes (2)")
    parser.add_argument("--broker", default="redis",
                        help="shared broker: redis or nats (our own, started with the "
                             "cluster, stopped with it) or a redis://host:port / "
                             "nats://host:port of yours (default redis)")
    parser.add_argument("--transport-server", default="http", choices=sorted(servers),
                        help="serve kind each instance runs (default http: /ws, /sse, /poll)")
    parser.add_argument("--jwt-secret", help="HS256 secret (default: $SOBRANIE_JWT_SECRET)")


def _up(args: argparse.Namespace) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Cluster(args.instances, args.broker, port=args.port,
                           kind=args.transport_server, secret=args.jwt_secret,
                           haproxy=args.haproxy) as cluster:
            if args.json:
                print(json.dumps(cluster.describe()), flush=True)
            else:
                print(f"sobranie-bench cluster: balancer on {cluster.lb_url} "
                      f"(logs in {cluster.dir}); Ctrl-C to stop", flush=True)
                for i, inst in enumerate(cluster.instances):
                    print(f"  instance {i}: {inst.url} pid {inst.pid}", flush=True)
            await stop.wait()

    return _run(main)


def _run(main: Any) -> int:
    try:
        asyncio.run(main())
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
