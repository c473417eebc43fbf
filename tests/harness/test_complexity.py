"""The code sizes every run records: the line counter, and the record itself."""

from __future__ import annotations

from pathlib import Path

from sobranie_bench.harness import complexity


def test_code_lines_skip_blank_comment_and_docstring_lines(tmp_path: Path) -> None:
    source = tmp_path / "adapter.py"
    source.write_text('"""Module\ndocstring."""\n\nimport os  # a comment\n\n# only a comment\n'
                      'X = 1\n"""Attribute docstring."""\n\n\ndef f(\n    a: int,\n) -> int:\n'
                      '    """Doc."""\n    return a + len(os.sep)\n')
    assert complexity.code_lines(source) == 6  # import, X, def f( a, ), return


def test_every_reference_transport_is_recorded_with_its_files() -> None:
    record = complexity.record()
    assert set(complexity.ADAPTERS) <= set(record)
    ws = record["ws"]
    assert ws["server_file"] == "servers/ws.py"
    assert ws["client_file"] == "sobranie_bench/clients/ws.py"
    assert ws["server_lines"] == complexity.code_lines(Path(complexity.__file__).parents[2]
                                                       / "servers" / "ws.py")
    size = complexity.from_metadata({"complexity": record}, "ws")
    assert size is not None and size.counted == "run" and size.total > 0
    assert complexity.from_metadata({"complexity": record}, "ws@elysia") is None
    assert complexity.from_metadata({}, "ws").counted == "source"  # type: ignore[union-attr]
