"""What one published message costs the broker: classic Redis pub/sub vs a Redis Cluster with
sharded pub/sub, measured in one run on our own services.

``INSTANCES`` hubs' brokers (what ``INSTANCES`` server processes would hold) all subscribe to
``CHANNELS`` channels; one publishes ``MESSAGES`` messages spread over them; the CPU seconds of
every redis-server process (masters and replicas) over the publishing, divided by the messages,
is the broker's cost per message; the busiest process's share is what limits a broker (each
redis-server runs commands on one thread). The publisher waits until every instance has delivered every
message, so the figure includes the fan-out to instances::

    python -m sobranie_bench.brokercost --out results/scale/broker_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from servers.brokers import Message, make_broker
from sobranie_bench import services

INSTANCES = 4
CHANNELS = 64
MESSAGES = 20000
CONCURRENCY = 64
"""Publishes in flight at once (the server processes' publishers together)."""


def _cpu(pids: list[int]) -> list[float]:
    """CPU seconds so far of each process."""
    return [sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids]


async def measure(url: str, pids: list[int], *, instances: int = INSTANCES,
                  channels: int = CHANNELS, messages: int = MESSAGES) -> dict[str, Any]:
    """Broker CPU per message for the broker at ``url`` whose server processes are ``pids``."""
    url = f"{url}{'&' if '?' in url else '?'}namespace=cost{int(time.time())}"
    got = [0] * instances
    brokers = [make_broker(url) for _ in range(instances)]

    def counter(i: int) -> Any:
        def deliver(msg: Message) -> None:
            got[i] += 1
        return deliver

    for i, broker in enumerate(brokers):
        await broker.start(counter(i))
    names = [f"chat:c{n}" for n in range(channels)]
    for broker in brokers:
        for name in names:
            await broker.subscribe(name)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int) -> None:
        async with sem:
            await brokers[0].publish(names[n % channels], {"n": n}, "bench")

    before, t0 = _cpu(pids), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(messages)))
    while min(got) < messages and time.perf_counter() - t0 < 120:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    each = [after - was for after, was in zip(_cpu(pids), before, strict=True)]
    cpu = sum(each)
    for broker in brokers:
        await broker.purge()  # type: ignore[attr-defined]
        await broker.close()
    return {"broker_cpu_us_per_msg": round(cpu * 1e6 / messages, 2),
            "busiest_process_us_per_msg": round(max(each) * 1e6 / messages, 2),
            "per_process_us_per_msg": [round(c * 1e6 / messages, 2) for c in each],
            "broker_cpu_seconds": round(cpu, 3), "seconds": round(elapsed, 3),
            "msgs_per_s": round(messages / elapsed, 1), "delivered_min": min(got),
            "messages": messages, "instances": instances, "channels": channels,
            "redis_processes": len(pids)}


async def run() -> dict[str, Any]:
    out: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                           "python": platform.python_version(), "cores": psutil.cpu_count(),
                           "load_average": list(psutil.getloadavg())}
    with services.start_redis() as redis:
        out["classic"] = await measure(redis.url, [redis.process.pid])
    with services.start_redis_cluster() as cluster:
        out["sharded"] = await measure(cluster.url, [n.process.pid for n in cluster.nodes])
        out["sharded"]["masters"] = len(cluster.nodes) // 2
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = asyncio.run(run())
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
