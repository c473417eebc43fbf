"""The docs quote generated figures only: every generated block matches the committed
results, and refresh rewrites a block from whatever results it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from sobranie_bench.report import data, docs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed() -> data.Results:
    return data.load(REPO / "results")


@pytest.mark.parametrize("name", ["scale-out.md", "webtransport.md", "socketio-webrtc.md"])
def test_docs_figures_are_the_committed_runs(name: str, committed: data.Results) -> None:
    doc = (REPO / "docs" / name).read_text()
    assert docs.BLOCK.search(doc), f"{name} has no generated block"
    assert docs.render(doc, committed) == doc, "stale: run `sobranie-bench report --docs docs`"


def test_refresh_rewrites_a_block_from_the_results(tmp_path: Path, fixture_dir: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# x\n\n<!-- generated: webtransport-figures -->\nold 1.23 ms\n"
                    "<!-- /generated -->\nafter\n")
    res = data.load(fixture_dir)
    assert docs.refresh(tmp_path, res) == [page]
    out = page.read_text()
    assert "old 1.23 ms" not in out and f"From run {res.main_run}" in out
    assert out.endswith("<!-- /generated -->\nafter\n")
    assert docs.refresh(tmp_path, res) == [], "a second refresh changes nothing"


def test_an_unknown_block_is_an_error(tmp_path: Path, fixture_dir: Path) -> None:
    (tmp_path / "p.md").write_text("<!-- generated: nope -->\n<!-- /generated -->\n")
    with pytest.raises(KeyError, match="nope"):
        docs.refresh(tmp_path, data.load(fixture_dir))
