"""What failed in the runs a report is built from, listed first.

A failed scenario (it raised, or its server died) is a raw file with an ``error`` (the runner
writes it and goes on with the matrix); a notebook whose cell raised is a line of
``notebooks/failures.json`` (written by ``sobranie-bench report --notebooks``). Both are shown
at the top of every report page and of ``failures.md``, and printed first at the end of
``sobranie-bench run`` and ``report``: the rest of the report is still generated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sobranie_bench.harness import results as raw_results

NOTEBOOK_FAILURES = "failures.json"
"""File, in the executed notebooks' directory, listing the notebooks that failed."""


@dataclass(frozen=True)
class Failure:
    """One thing that did not produce its figures."""

    kind: str
    """``scenario`` or ``notebook``."""
    what: str
    """The point that failed (``ws echo connections=50;payload=48;rate=500 #1``) or the
    notebook (``06_capacity``)."""
    error: str
    """The error in one line (exception type and message, or the server's last words)."""
    run_id: str | None = None
    """Run the scenario belonged to (None for a notebook)."""

    def line(self) -> str:
        where = f" (run {self.run_id})" if self.run_id else ""
        return f"{self.kind} {self.what}{where}: {self.error}"


def scenario_failures(raws: Iterable[dict[str, Any]]) -> list[Failure]:
    """The failed runs among ``raws`` (those with an ``error``)."""
    return [Failure("scenario", f"{raw['transport']} {raw['scenario']} "
                    f"{raw_results.params_key(raw['params'])} #{raw['trial']}",
                    str(raw["error"]).replace("\n", " "),
                    str(raw.get("metadata", {}).get("run_id") or "") or None)
            for raw in raws if "error" in raw]


def write_notebook_failures(notebooks_dir: Path | str, failures: Sequence[Failure]) -> Path:
    """Record the notebooks that failed in their last execution (an empty list: none)."""
    path = Path(notebooks_dir) / NOTEBOOK_FAILURES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(f) for f in failures], indent=1))
    return path


def notebook_failures(notebooks_dir: Path | str) -> list[Failure]:
    """The notebooks that failed in their last execution into ``notebooks_dir``."""
    path = Path(notebooks_dir) / NOTEBOOK_FAILURES
    try:
        return [Failure(**item) for item in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def collect(res: Any, notebooks_dir: Path | str | None = None) -> list[Failure]:
    """Failed scenarios of the report's results (one-instance and scale-out runs), then the
    notebooks that failed in ``notebooks_dir``."""
    raws = [*res.raws, *(raw for scaled in res.scaleout.values() for raw in scaled.raws)]
    out = scenario_failures(raws)
    return out + (notebook_failures(notebooks_dir) if notebooks_dir is not None else [])


def banner(failures: Sequence[Failure]) -> str:
    """The Markdown block that opens every report page when something failed ("" if not)."""
    if not failures:
        return ""
    items = "\n".join(f"- {f.line()}" for f in failures)
    return (f"> **{len(failures)} failure{'s' if len(failures) > 1 else ''} in the runs behind "
            "this report** (the rest was generated; their cells say *run failed*):\n>\n"
            + "\n".join(f"> {line}" for line in items.splitlines()) + "\n")


def insert_banner(path: Path, failures: Sequence[Failure]) -> None:
    """Put the failures block right under the page's title (nothing when none failed)."""
    block = banner(failures)
    if not block:
        return
    title, _, rest = path.read_text().partition("\n")
    path.write_text(f"{title}\n\n{block}{rest}")


def write(failures: Sequence[Failure], out_dir: Path | str) -> Path:
    """``failures.md``: every failure, or one line saying there were none."""
    path = Path(out_dir) / "failures.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = banner(failures) or "No scenario and no notebook failed in the runs behind this " \
                               "report.\n"
    path.write_text(f"# Failures\n\n{body}")
    return path


def console_lines(failures: Sequence[Failure]) -> list[str]:
    """What ``run`` and ``report`` print first at their end."""
    if not failures:
        return []
    head = f"{len(failures)} FAILURE{'S' if len(failures) > 1 else ''} (the rest was generated):"
    return [head, *(f"  - {f.line()}" for f in failures)]


def exit_code(nothing_measured: bool, any_failure: bool, strict: bool) -> int:
    """0 when the report was produced, failures listed; 1 when nothing could be measured,
    or with ``--strict`` when anything failed (``run`` and ``report``)."""
    return 1 if nothing_measured or (strict and any_failure) else 0
