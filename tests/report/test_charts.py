"""Charts are written as PNG and SVG, with or without results."""

from __future__ import annotations

from pathlib import Path

from sobranie_bench.report import charts, data


def test_every_chart_is_written_as_png_and_svg(built: Path) -> None:
    for name in charts.CHARTS:
        png, svg = built / "charts" / f"{name}.png", built / "charts" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert svg.read_text().lstrip().startswith("<?xml"), name


def test_charts_say_not_measured_without_results(tmp_path: Path) -> None:
    res = data.load(tmp_path / "empty")
    paths = [p for name in ("latency_percentiles", "memory_per_connection")
             for p in charts.save(charts.CHARTS[name](res), tmp_path / name)]
    assert all(p.stat().st_size > 0 for p in paths)
    assert "not measured" in (tmp_path / "latency_percentiles.svg").read_text()


def test_svg_is_reproducible(fixture_dir: Path, tmp_path: Path) -> None:
    res = data.load(fixture_dir)
    first = charts.save(charts.memory_per_connection(res), tmp_path / "a")[1].read_text()
    second = charts.save(charts.memory_per_connection(res), tmp_path / "b")[1].read_text()
    assert first == second
