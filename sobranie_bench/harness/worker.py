"""A harness worker process: reads {"scenario", "ctx"} as one JSON line on stdin, runs that
part of the load, prints its result as JSON on stdout (``sobranie-bench run --workers K``).

Between the two, a part that waits for the others (:meth:`PartContext.together`) prints
``{"barrier": name}`` and reads ``{"barrier": name, "at_ns": t}`` back from the runner, which
answers every worker at once when all have arrived (or ended)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from servers.run import install_uvloop
from sobranie_bench.harness.sampler import raise_fd_limit
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.registry import registry


async def barrier(name: str) -> int:
    """Tell the runner this part reached ``name``; wait for its go (the shared instant)."""
    print(json.dumps({"barrier": name}), flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:  # the runner is gone: nobody to wait for
        return time.monotonic_ns()
    go = json.loads(line)
    if go.get("barrier") != name:
        raise RuntimeError(f"runner released barrier {go.get('barrier')!r}, expected {name!r}")
    return int(go["at_ns"])


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    ctx = PartContext(**{**spec["ctx"], "barrier": barrier})
    raise_fd_limit()
    install_uvloop()

    async def run() -> dict[str, Any]:
        scenario = registry()[spec["scenario"]]
        try:
            return await scenario.part(ctx)
        finally:
            if scenario.teardown is not None:
                await scenario.teardown()

    result = asyncio.run(run())
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
