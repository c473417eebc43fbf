"""results/README.md says which commands and profiles made the results, from the runs'
metadata: the recorded command, or one rebuilt from the run's profile, flags and files that
the CLI parses back into the same plan."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from sobranie_bench.cli import build_parser
from sobranie_bench.harness.cli import plan_of
from sobranie_bench.harness.runner import Plan
from sobranie_bench.report import data, summary
from tests.report.conftest import add_raw, raw_file


def parsed(command: str) -> Plan:
    """The plan ``sobranie-bench run ...`` would make of ``command``."""
    argv = shlex.split(command)
    assert argv[:2] == ["sobranie-bench", "run"]
    return plan_of(build_parser().parse_args(argv[1:]))


def test_the_index_says_which_commands_made_the_results(built: Path, fixture_dir: Path) -> None:
    md = (built / "README.md").read_text()
    res = data.load(fixture_dir)
    assert "## How these results were made" in md
    row = next(line for line in md.splitlines() if line.startswith("| main matrix"))
    assert res.main_run and res.main_run in row and "*(rebuilt)*" in row and "| ci |" in row
    command = re.search(r"`(sobranie-bench run [^`]*)`", row)
    assert command
    plan = parsed(command.group(1))
    ran = {(r["transport"], r["scenario"]) for r in res.raws}
    planned = {(t, s.name) for t, s, _p, _trial in plan.points()}
    assert planned == ran, "the rebuilt command runs exactly what the run holds"


def test_a_recorded_command_is_quoted_as_recorded(results_copy: Path) -> None:
    plan = Plan(profile="ci", transports=("ws",), scenarios=("echo",), tls=False,
                overrides=(("rate", 50),))
    assert parsed(plan.command()) == plan, "the CLI parses the command back into the plan"
    raw = raw_file("ws", "echo")
    raw["metadata"]["command"] = plan.command()
    add_raw(results_copy, raw, "29991231T000000Z")
    res = data.load(results_copy)
    assert summary.run_command(res, "29991231T000000Z") == (plan.command(), False)
    assert "--no-tls" in plan.command() and "--set rate=50" in plan.command()


def test_parts_at_other_profiles_are_named(results_copy: Path) -> None:
    for t in ("ws", "sse"):
        raw = raw_file(t, "fanout")
        raw["metadata"].update(cluster=3, broker="redis", profile="standard")
        add_raw(results_copy, raw, "29991231T000000Z")
    text = summary.provenance(data.load(results_copy))
    row = next(line for line in text.splitlines() if line.startswith("| cluster"))
    assert "--broker redis --cluster 3" in row and "--transports ws,sse" in row
    assert "--scenarios fanout" in row and "| standard |" in row
    assert "Profiles differ: the main matrix is at **ci**" in text
