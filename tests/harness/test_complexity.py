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
    assert complexity.from_metadata({}, "ws").counted == "source"  # type: ignore[union-attr]


def test_typescript_lines_skip_blank_and_comment_lines() -> None:
    source = ["// a comment", "", "/** a doc", " * comment */", "const a = 1;  // trailing",
              "/* one line */", "/* before */ const b = 2;", "  f(a,", "    b);"]
    assert complexity.ts_code_lines(source) == 4  # a, b, f(a, and b);


def test_only_the_marked_adapter_is_counted(tmp_path: Path) -> None:
    app = tmp_path / "app.ts"
    app.write_text("const shared = 1;\n// adapter: ws\nconst a = 1;\n// end adapter: ws\n"
                   "const alsoShared = 2;\n// adapter: sse\nconst s = 1;\n// end adapter: sse\n"
                   "  // adapter: ws\n  function f() {\n    // why\n  }\n  // end adapter: ws\n")
    assert complexity.adapter_lines(app, "ws") == 3  # a, function f() {, }
    assert complexity.adapter_lines(app, "sse") == 1
    assert complexity.adapter_lines(app, "longpoll") is None


def test_each_elysia_transport_is_recorded_from_its_marked_adapter() -> None:
    record = complexity.record()
    app = Path(complexity.__file__).parents[2] / "servers" / "elysia" / "src" / "app.ts"
    for transport, name in complexity.ELYSIA_ADAPTERS.items():
        size = record[transport]
        assert size["server_file"] == f"servers/elysia/src/app.ts: {name}"
        assert size["server_lines"] == complexity.adapter_lines(app, name) > 0
        assert size["client_lines"] == record[name]["client_lines"]  # the Python one's client
    total = complexity.ts_code_lines(app.read_text().splitlines())
    marked = sum(record[t]["server_lines"] for t in complexity.ELYSIA_ADAPTERS)
    assert marked < total  # the routes, CORS and auth the three share are not counted
