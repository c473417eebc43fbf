"""The report's network section (report/network.py): its loopback echo column reads the run the
comparison reads, at the network runs' point where that run has it, says which rate where it
has not, and never reads another run (a newer ``--tls-compare`` run, an older one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sobranie_bench.harness import figures, results
from sobranie_bench.report import network
from tests.report.conftest import FIXTURE, add_raw, raw_file

MAIN = next(p.name for p in (FIXTURE / "runs").iterdir() if p.is_dir())
"""The fixture's one run (ci: echo at connections=50, payload=48, rate=1000)."""


def replace(root: Path, transport: str, **params: Any) -> None:
    """The main run's echo of ``transport`` measured at other ``params`` instead."""
    raw = raw_file(transport, "echo")
    (root / "runs" / MAIN / results.raw_name(raw)).unlink()
    raw["params"] = {**raw["params"], **params}
    add_raw(root, raw, MAIN)


def ms(us: float) -> str:
    return f"{us / 1000:,.1f}"


def echo_cells(text: str, transport: str) -> dict[str, str]:
    """Profile -> the echo table's cell for ``transport``."""
    table = text.split("## Echo round trip")[1].split("\n## ")[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("|")]
    head = [c.strip() for c in rows[0]]
    row = next(r for r in rows if r[0].strip() == transport)
    return dict(zip(head[1:], (c.strip() for c in row[1:])))


def test_the_loopback_column_is_the_comparisons_run_at_the_network_point(
        results_copy: Path, tmp_path: Path) -> None:
    for transport in ("ws", "sse"):  # the network runs' point: the fixture's echo point
        on_4g = raw_file(transport, "echo")
        on_4g["network"] = "4g"
        add_raw(results_copy, on_4g, "29991231T000002Z")
    # a newer --tls-compare run of the same point with other figures: not the comparison's
    compared = raw_file("ws", "echo")
    compared["histograms"] = raw_file("longpoll", "echo")["histograms"]
    compared["metadata"]["tls_compare"] = True
    add_raw(results_copy, compared, "29991231T000001Z")
    replace(results_copy, "sse", rate=2000)  # a ladder without the network point's rate
    replace(results_copy, "longpoll", connections=10)  # no point of that shape at all

    (path,) = network.write(results_copy, tmp_path / "report", with_charts=False)
    text = path.read_text()
    mine = figures.metrics(raw_file("ws", "echo"))
    theirs = figures.metrics(compared)
    assert ms(mine["rtt_p50_us"][0]) != ms(theirs["rtt_p50_us"][0])
    assert "(point connections=50;payload=48;rate=1000)" in text
    assert f"The loopback column reads run {MAIN} (the comparison's)" in text
    ws = echo_cells(text, "ws")
    assert ws["loopback"].startswith(f"{ms(mine['rtt_p50_us'][0])} / "
                                     f"{ms(mine['rtt_p99_us'][0])}"), ws
    assert " at " not in ws["loopback"] and ws["4g"].startswith(ms(mine["rtt_p50_us"][0]))
    sse = figures.metrics(raw_file("sse", "echo"))  # the same figures, now at 2,000/s
    assert echo_cells(text, "sse")["loopback"].startswith(
        f"{ms(sse['rtt_p50_us'][0])} / {ms(sse['rtt_p99_us'][0])} at 2,000/s")
    assert echo_cells(text, "longpoll")["loopback"] == "other points"
    assert echo_cells(text, "longpoll")["4g"] == "—"


def test_a_cell_is_flagged_by_the_trials_at_its_own_point_only(results_copy: Path) -> None:
    ok = raw_file("ws", "echo")
    crowded: dict[str, Any] = json.loads(json.dumps(ok))
    crowded["params"]["rate"] = 18000
    crowded["machine"] = {"cores": 2, "samples": [[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]}
    crowded["window"] = {"measure": 0.0, "end": 1.0}
    assert results.is_noisy(crowded) and not results.is_noisy(ok)
    chosen = {("ws", "echo", "loopback"): [ok, crowded]}
    point = network.echo_point(chosen)
    assert point == ok["params"]
    assert "noisy" not in network.echo_cell(chosen, ("ws", "echo", "loopback"), point)
    assert "noisy" in network.flags(chosen, ("ws", "echo", "loopback"))  # every trial
