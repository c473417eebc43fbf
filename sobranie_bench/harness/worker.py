"""A harness worker process: reads {"scenario", "ctx"} JSON on stdin, runs that part of the
load, prints its result as JSON on stdout (``sobranie-bench run --workers K``)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from servers.run import install_uvloop
from sobranie_bench.harness.sampler import raise_fd_limit
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.registry import registry


def main() -> None:
    spec = json.load(sys.stdin)
    ctx = PartContext(**spec["ctx"])
    raise_fd_limit()
    install_uvloop()
    async def run() -> dict[str, Any]:
        scenario = registry()[spec["scenario"]]
        try:
            return await scenario.part(ctx)
        finally:
            if scenario.teardown is not None:
                await scenario.teardown()

    json.dump(asyncio.run(run()), sys.stdout)


if __name__ == "__main__":
    main()
