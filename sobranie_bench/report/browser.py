"""The browser column measured: what the ``browser`` scenario saw, per transport and engine.

The comparison's browser-support cell starts with these measurements (engine and version,
whether every tab did the whole check, connect-to-hello and connect-to-first-message p50),
then the cited public sources, which rate breadth across engines we do not run (Safari,
older versions). :func:`section` is the comparison's table of every measured transport x
engine, with the SSE per-origin limit of HTTP/1.1 as measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sobranie_bench.harness import figures
from sobranie_bench.report import text
from sobranie_bench.report.data import Results

SCENARIO = "browser"
ENGINE_TITLES = {"chromium": "Chromium", "firefox": "Firefox"}


@dataclass(frozen=True, slots=True)
class EngineResult:
    """One transport in one engine, over the trials of the newest run."""

    transport: str
    """Transport name (as in results)."""
    engine: str
    """``chromium`` or ``firefox``."""
    version: str | None
    """The engine's version as it reported it (None when it did not run)."""
    tabs: int
    """Tabs that ran the check, over all trials."""
    tabs_ok: int
    """Tabs whose check passed (hello, first message, drop, resume, nothing lost)."""
    hello_us: float | None
    """Connect-to-hello p50 over the tabs (median over trials), microseconds."""
    first_us: float | None
    """Connect-to-first-message p50 over the tabs (median over trials), microseconds."""
    reason: str | None
    """Why a tab failed (the first reason), or why the engine did not run."""
    run_id: str
    """The run it comes from."""

    @property
    def title(self) -> str:
        name = ENGINE_TITLES.get(self.engine, self.engine)
        return f"{name} {self.version}" if self.version else name

    @property
    def works(self) -> bool | None:
        """True when every tab passed, False when any failed, None when it did not run."""
        return None if self.version is None else self.tabs_ok == self.tabs > 0

    def verdict(self) -> str:
        if self.works is None:
            return f"not run ({self.reason})"
        if self.works:
            return "works"
        return f"does not work ({self.tabs_ok}/{self.tabs} tabs: {self.reason})"


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def engine_results(res: Results, transport: str) -> list[EngineResult]:
    """The transport's browser measurements, one per engine (in the order they ran)."""
    by_engine: dict[str, list[dict[str, Any]]] = {}
    for raw in res.raw(transport, SCENARIO):
        if "error" not in raw:
            by_engine.setdefault(str(raw["params"]["engine"]), []).append(raw)
    out = []
    for engine, raws in by_engine.items():
        infos = [raw.get("info", {}) for raw in raws]
        per_raw = [figures.metrics(raw) for raw in raws]
        reasons = [r for info in infos for r in ([info["not_run"]] if "not_run" in info
                                                  else info.get("errors", []))]
        version = next((info["engine_version"] for info in infos
                        if info.get("engine_version")), None)
        out.append(EngineResult(
            transport=transport, engine=engine, version=version,
            tabs=sum(int(raw["counters"]["tabs"]) for raw in raws),
            tabs_ok=sum(int(raw["counters"]["tabs_ok"]) for raw in raws),
            hello_us=_median(f.get("hello_p50_us", (None,))[0] for f in per_raw),
            first_us=_median(f.get("first_message_p50_us", (None,))[0] for f in per_raw),
            reason=reasons[0] if reasons else None,
            run_id=str(raws[0]["metadata"]["run_id"])))
    return out


def basis(res: Results, transports: Iterable[str]) -> str:
    """The measured part of a technology's browser cell ('' when nothing was measured)."""
    parts = []
    for transport in transports:
        found = engine_results(res, transport)
        if not found:
            continue
        engines = "; ".join(
            f"{r.title} {r.verdict()}" + (f", hello {text.ms(r.hello_us)}, first message "
                                          f"{text.ms(r.first_us)}" if r.works else "")
            for r in found)
        parts.append(f"{transport}: {engines}")
    if not parts:
        return ""
    return "measured (p50, run " + found_run(res, transports) + "): " + " | ".join(parts)


def found_run(res: Results, transports: Iterable[str]) -> str:
    return ", ".join(sorted({r.run_id for t in transports for r in engine_results(res, t)}))


def sse_limits(res: Results) -> list[tuple[str, str, dict[str, Any], str]]:
    """(transport, engine title, the SSE limit's record, run id) for every run that
    measured it."""
    out = []
    for transport in res.transports:
        for raw in res.raw(transport, SCENARIO):
            info = raw.get("info", {})
            if "sse_limit" in info:
                title = ENGINE_TITLES.get(info["engine"], info["engine"])
                out.append((transport, f"{title} {info.get('engine_version')}",
                            info["sse_limit"], str(raw["metadata"]["run_id"])))
    return out


def _yes(flag: Any) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def _http2(record: dict[str, Any]) -> str:
    if "not_run" in record:
        return f"not run ({record['not_run']})"
    if "seventh_blocked" not in record:
        return "—"
    return f"{_yes(record['seventh_blocked'])} ({record.get('protocol')})"


def section(res: Results) -> str:
    """The comparison's 'Browsers, measured' section (markdown)."""
    rows = [[r.transport, r.title, r.verdict(), f"{r.tabs_ok}/{r.tabs}", text.ms(r.hello_us),
             text.ms(r.first_us)]
            for t in res.transports for r in engine_results(res, t)]
    if not rows:
        return ("## Browsers, measured\n\nNo `browser` scenario in these results "
                "(`sobranie-bench run --scenarios browser`): the browser column is cited only.\n")
    limits = [[t, engine, _yes(lim.get("seventh_blocked")), _yes(lim.get("other_host_blocked")),
               text.ms(lim["seventh_hello_after_close_ms"] * 1000)
               if lim.get("seventh_hello_after_close_ms") is not None else "never",
               _http2(lim.get("http2", {})),
               "; ".join(e for e in (lim.get("error"), lim.get("http2", {}).get("error")) if e)]
              for t, engine, lim, _run in sse_limits(res)]
    first = next(r for t in res.transports for r in engine_results(res, t))
    meta = res.metadata(first.run_id)
    parts = [
        "## Browsers, measured",
        "",
        (f"The `browser` scenario (run {found_run(res, res.transports)}, profile "
         f"{meta.get('profile')}, TLS {'on' if meta.get('tls') else 'off'}): headless tabs of "
         "each engine (Debian's builds: Chromium through Playwright, Firefox ESR through "
         "puppeteer-core over WebDriver BiDi) load the browser client from another origin and "
         "each do connect, hello, subscribe, publish, first message, drop, resume, nothing lost "
         "or duplicated. Times are p50 over the tabs, from `connect()` to the hello and to the "
         "first message, on this machine's loopback."),
        "",
        text.table(["Transport", "Engine", "Result", "Tabs ok", "Hello p50",
                    "First message p50"], rows),
        "",
    ]
    if limits:
        parts += [
            ("SSE's per-origin limit over HTTP/1.1 (our servers offer only HTTP/1.1, over "
             "TLS too): seven tabs of one profile each hold an EventSource to one server; the "
             "seventh waits for a connection of the first six (browsers keep 6 per host); "
             "an eighth tab reaching the same server under another host name is not held; "
             "closing one of the six lets the seventh in. The same seven tabs through an "
             "HAProxy that speaks HTTP/2 to the browser (ALPN h2; HTTP/1.1 to our server) "
             "share one multiplexed connection: the last column says whether the seventh "
             "waited there, and the protocol the browser reported."),
            "",
            text.table(["Transport", "Engine", "7th tab blocked", "Other host blocked",
                        "7th hello after one closed", "Over HTTP/2: 7th blocked", "Error"],
                       limits),
            "",
        ]
    return "\n".join(parts)
