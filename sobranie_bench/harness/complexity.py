"""What a transport costs to write, counted into every run's metadata: the code lines of its
reference server adapter and client (the report's complexity column reads them from the run,
so a later refactor cannot silently change an earlier run's verdicts).

A Python adapter is its module (servers/ws.py); the hub and the shared HTTP app are not
counted. The Elysia server keeps its three adapters in one app, each transport's own lines
marked ``// adapter: <name>`` ... ``// end adapter: <name>``; those are counted, and what the
three share (routes for publish and the POSTs, CORS, auth, its hub) is not, as for Python."""

from __future__ import annotations

import ast
import importlib.util
import io
import tokenize
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sobranie_bench.clients import TRANSPORTS

ADAPTERS: dict[str, str] = {
    "ws": "servers.ws",
    "ws-websockets": "servers.ws_websockets",
    "sse": "servers.sse",
    "longpoll": "servers.longpoll",
    "webtransport": "servers.webtransport",
    "socketio": "servers.socketio_app",
    "socketio-polling": "servers.socketio_app",
    "webrtc": "servers.webrtc",
}
"""Transport -> the server adapter module that translates it to hub calls."""
ELYSIA_ADAPTERS: dict[str, str] = {"ws@elysia": "ws", "sse@elysia": "sse",
                                   "longpoll@elysia": "longpoll"}
"""Transport -> the adapter marked in the Elysia app (``ELYSIA_APP``)."""
ELYSIA_APP = ("src", "app.ts")
"""The Elysia app's path inside the ``servers.elysia`` package."""


@dataclass(frozen=True)
class CodeSize:
    """Lines of one transport's reference server adapter and client."""

    transport: str
    server_file: str
    """Adapter path relative to the repository, e.g. ``servers/ws.py``; for Elysia the app
    and the adapter marked in it, ``servers/elysia/src/app.ts: ws``."""
    server_lines: int
    """Code lines of the adapter (:func:`code_lines`)."""
    client_file: str
    """Client path relative to the repository."""
    client_lines: int
    """Code lines of the client."""
    counted: str = "run"
    """``run``: recorded in the run's metadata; ``source``: counted from today's files (a run
    older than this record)."""

    @property
    def total(self) -> int:
        return self.server_lines + self.client_lines


def code_lines(path: Path) -> int:
    """Lines of ``path`` that hold code: blank lines, comment-only lines and docstrings are not
    counted."""
    source = path.read_text()
    docstrings: set[int] = set()

    def is_doc(stmt: ast.stmt) -> bool:
        return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str))

    def mark(stmt: ast.stmt) -> None:
        docstrings.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))

    for node in ast.walk(ast.parse(source)):
        documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, documented) and node.body and is_doc(node.body[0]):
            mark(node.body[0])
        # attribute docstrings (a bare string right after an assignment) document too
        if isinstance(node, (ast.Module, ast.ClassDef)):
            for prev, stmt in zip(node.body, node.body[1:]):
                if isinstance(prev, (ast.Assign, ast.AnnAssign)) and is_doc(stmt):
                    mark(stmt)
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in skip:
            continue
        code.update(range(tok.start[0], tok.end[0] + 1))
    return len(code - docstrings)


def ts_code_lines(lines: Iterable[str]) -> int:
    """Lines of TypeScript that hold code: blank lines, ``//`` comment lines and ``/* */``
    comment blocks are not counted (a code line with a comment after it is)."""
    count, in_block = 0, False
    for line in lines:
        rest = line.strip()
        if in_block or rest.startswith("/*"):
            opened = 0 if in_block else 2
            in_block = "*/" not in rest[opened:]
            if in_block:
                continue
            rest = rest[opened:].split("*/", 1)[1].strip()
        if rest and not rest.startswith("//"):
            count += 1
    return count


def adapter_lines(path: Path, name: str) -> int | None:
    """Code lines of ``path`` between ``// adapter: <name>`` and ``// end adapter: <name>``,
    over every such region (None when the file marks none)."""
    region: list[str] = []
    inside = found = False
    for line in path.read_text().splitlines():
        marker = line.strip()
        if marker == f"// adapter: {name}":
            inside = found = True
        elif marker == f"// end adapter: {name}":
            inside = False
        elif inside:
            region.append(line)
    return ts_code_lines(region) if found else None


def module_path(module: str) -> Path | None:
    """Source file of a module, without importing it (None if it does not exist)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _relative(path: Path) -> str:
    parts = path.parts
    for anchor in ("servers", "sobranie_bench"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor):])
    return path.name


def _server(transport: str) -> tuple[str, int] | None:
    """The server adapter of ``transport`` (path relative to the repository) and its lines."""
    name = ELYSIA_ADAPTERS.get(transport)
    if name is not None:
        package = module_path("servers.elysia")
        app = package.parent.joinpath(*ELYSIA_APP) if package else None
        lines = adapter_lines(app, name) if app is not None and app.is_file() else None
        return None if app is None or lines is None else (f"{_relative(app)}: {name}", lines)
    adapter = module_path(ADAPTERS.get(transport, ""))
    return None if adapter is None else (_relative(adapter), code_lines(adapter))


def count(transport: str) -> CodeSize | None:
    """Adapter and client lines of ``transport`` as the files are now (None without both)."""
    server = _server(transport)
    entry = TRANSPORTS.get(transport)
    client = module_path(entry.client.partition(":")[0]) if entry else None
    if server is None or client is None:
        return None
    return CodeSize(transport, *server, _relative(client), code_lines(client), counted="source")


def record() -> dict[str, dict[str, Any]]:
    """Every transport's code size, for a run's metadata."""
    sizes = {t: count(t) for t in TRANSPORTS}
    return {t: {k: v for k, v in asdict(s).items() if k not in ("transport", "counted")}
            for t, s in sizes.items() if s is not None}


def from_metadata(meta: dict[str, Any], transport: str) -> CodeSize | None:
    """The size a run recorded for ``transport``; counted from today's files for a run that
    recorded none for it (older than this record, or than the Elysia count: marked
    ``counted="source"``)."""
    recorded = meta.get("complexity", {}).get(transport)
    return count(transport) if recorded is None else CodeSize(transport, **recorded)
