"""Calibration: per-transport costs for the capacity models, read from ``results/summary.csv``.

Every figure is the median over trials of one metric (and, where a scenario ran at several
parameter points, the median of those medians). A figure that the summary does not hold is
taken from :data:`FALLBACKS` and marked ``source="fallback"`` with its rationale, so a plan
always says which of its inputs were measured.

Summary schema (tidy, one row per transport x scenario x params x trial x metric): ``run_id,
transport, scenario, params, trial, metric, value, unit, client_bound``; ``params`` is the
canonical ``k=v;k=v`` string sorted by key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

DEFAULT_SUMMARY = Path("results/summary.csv")
TRANSPORTS = (
    "ws",
    "ws-websockets",
    "sse",
    "longpoll",
    "webtransport",
    "socketio",
    "socketio-polling",
    "webrtc",
)
SUMMARY_COLUMNS = (
    "run_id",
    "transport",
    "scenario",
    "params",
    "trial",
    "metric",
    "value",
    "unit",
    "client_bound",
)
KIB = 1024

Source = Literal["measured", "fallback"]


@dataclass(frozen=True)
class Figure:
    """One calibrated number and where it came from."""

    value: float
    """The number, in ``unit``."""
    unit: str
    """Unit of ``value``, e.g. ``"us"`` or ``"bytes"``."""
    source: Source
    """``"measured"`` (median of summary rows) or ``"fallback"`` (constant from FALLBACKS)."""
    note: str
    """How it was measured, or why the fallback value is what it is."""


@dataclass(frozen=True, order=True)
class LatencyPoint:
    """One point of an instance's latency curve."""

    work_us_per_s: float
    """Server CPU the offered load costs at the measured per-message costs, us per second."""
    p95_us: float
    """Median over trials of the 95th-percentile latency at that load, microseconds."""
    rate_per_s: float
    """Offered rate: echo messages, or fan-out deliveries, per second."""


@dataclass(frozen=True)
class LatencyCurve:
    """Measured p95 latency of one benchmark instance versus offered load."""

    points: tuple[LatencyPoint, ...]
    """Points in increasing load; empty when nothing was measured."""
    source: Source
    """``"measured"`` when points come from echo or capacity rows, else ``"fallback"``."""
    note: str
    """Which scenario the points come from."""
    ends_at_knee: bool = False
    """True when the next load past the last point missed the SLO (capacity rows)."""

    def work_within(self, slo_us: float) -> float | None:
        """Highest load (CPU us per second) whose p95 stays within ``slo_us``.

        Linear between the points around the crossing. ``None`` when the measurement sets no
        limit (every point within the SLO and the curve does not end at a knee).
        """
        within = [p for p in self.points if p.p95_us <= slo_us]
        if not self.points or (len(within) == len(self.points) and not self.ends_at_knee):
            return None
        if len(within) == len(self.points):
            return self.points[-1].work_us_per_s
        if not within:
            return 0.0
        below = within[-1]
        above = self.points[self.points.index(below) + 1]
        share = (slo_us - below.p95_us) / (above.p95_us - below.p95_us)
        return below.work_us_per_s + share * (above.work_us_per_s - below.work_us_per_s)


@dataclass(frozen=True)
class TransportCosts:
    """What one transport's reference server costs, per unit of work, on the benchmark box."""

    transport: str
    """Transport name as in the summary, e.g. ``"ws"``."""
    cpu_us_per_inbound: Figure
    """Server CPU per client message received (parse, authorise, publish), microseconds."""
    cpu_us_per_delivery: Figure
    """Server CPU per message delivered to one subscriber (fan-out), microseconds."""
    cpu_us_per_connection: Figure
    """Server CPU per new connection (accept, upgrade or handshake, authorise), microseconds."""
    memory_bytes_per_connection: Figure
    """Resident memory per idle connection, bytes."""
    wire_overhead_bytes: Figure
    """Bytes on the wire per delivered message beyond its payload (framing, headers)."""
    keepalive_cpu_us_per_connection_s: Figure
    """CPU spent keeping one idle connection alive, microseconds per second."""
    echo_cpu_us_per_msg: Figure
    """Server CPU per echoed message (one inbound plus one delivery), microseconds."""
    latency_curve: LatencyCurve = field(
        default=LatencyCurve((), "fallback", "no latency curve measured")
    )
    """p95 latency of one instance versus offered echo rate."""
    idle_cores: Figure = Figure(0.0, "cores", "fallback", "not fitted: taken as none")
    """CPU one process uses with no load (timers, GC), cores; fitted by capacity.fit."""

    def figures(self) -> dict[str, Figure]:
        """The scalar figures by name, for tables and JSON."""
        return {
            "cpu_us_per_inbound": self.cpu_us_per_inbound,
            "cpu_us_per_delivery": self.cpu_us_per_delivery,
            "cpu_us_per_connection": self.cpu_us_per_connection,
            "memory_bytes_per_connection": self.memory_bytes_per_connection,
            "wire_overhead_bytes": self.wire_overhead_bytes,
            "keepalive_cpu_us_per_connection_s": self.keepalive_cpu_us_per_connection_s,
            "echo_cpu_us_per_msg": self.echo_cpu_us_per_msg,
        }

    @property
    def fallbacks(self) -> list[str]:
        """Names of figures (and the latency curve) not measured."""
        names = [name for name, f in self.figures().items() if f.source == "fallback"]
        if self.latency_curve.source == "fallback":
            names.append("latency_curve")
        return names


# Fallback constants, used only where the summary has no measurement. Values are estimates
# for this suite's pure-Python asyncio reference servers on one core; each rationale names the
# protocol fact or documentation the order of magnitude comes from. Replace them by running the
# harness: a measured figure always wins.
_CPU_RATIONALE = (
    "estimate for a pure-Python asyncio server: JSON envelope decode/encode plus one syscall "
    "dominate (tens of microseconds per message); HTTP-per-message transports pay a full "
    "request parse (~4x); Socket.IO adds engine.io + socket.io packet layers (~1.5x ws)"
)
_CONN_RATIONALE = (
    "estimate: accept + HTTP upgrade/handshake + JWT check ~1 ms in Python (TLS terminated at "
    "the load balancer); QUIC/TLS 1.3 in aioquic and ICE+DTLS+SCTP in aiortc run in Python"
)
_MEMORY_RATIONALE = (
    "websockets docs ('Memory and buffers'): 14 KiB per connection with compression off; "
    "other transports scaled by the per-connection state they keep (parked request for "
    "long-polling, QUIC connection state for WebTransport, ICE/DTLS/SCTP for WebRTC)"
)
_WIRE_RATIONALE = (
    "protocol framing: RFC 6455 server frame 2-4 bytes; SSE 'id:/data:' lines + chunk framing; "
    "HTTP/1.1 response headers per long-poll; Socket.IO '42[\"event\",' prefix; QUIC short "
    "header + STREAM frame + 16-byte AEAD tag; DTLS record + SCTP DATA chunk"
)
_KEEPALIVE_RATIONALE = (
    "estimate: heartbeat period x cost of one heartbeat (ws ping 20 s, SSE comment 15 s, "
    "long-poll re-poll 25 s at HTTP-request cost, QUIC ack/PING 10 s, ICE consent check 5 s per "
    "RFC 7675)"
)

# transport: (cpu_inbound_us, cpu_delivery_us, cpu_connection_us, memory_bytes,
#             wire_overhead_bytes, keepalive_us_per_conn_s)
_FALLBACK_VALUES: dict[str, tuple[float, float, float, float, float, float]] = {
    "ws": (50, 8, 1_000, 14 * KIB, 4, 1.5),
    "ws-websockets": (45, 7, 1_000, 14 * KIB, 4, 1.5),
    "sse": (150, 10, 1_000, 12 * KIB, 37, 1.3),
    "longpoll": (150, 200, 1_000, 8 * KIB, 200, 12.0),
    "webtransport": (120, 25, 5_000, 64 * KIB, 35, 6.0),
    "socketio": (75, 12, 3_000, 24 * KIB, 19, 1.6),
    "socketio-polling": (200, 220, 2_000, 24 * KIB, 250, 12.0),
    "webrtc": (150, 30, 30_000, 200 * KIB, 60, 20.0),
}


def _fallback_costs(transport: str) -> dict[str, Figure]:
    values = _FALLBACK_VALUES.get(transport, _FALLBACK_VALUES["ws"])
    inbound, delivery, conn, memory, wire, keepalive = values
    return {
        "cpu_us_per_inbound": Figure(inbound, "us", "fallback", _CPU_RATIONALE),
        "cpu_us_per_delivery": Figure(delivery, "us", "fallback", _CPU_RATIONALE),
        "cpu_us_per_connection": Figure(conn, "us", "fallback", _CONN_RATIONALE),
        "memory_bytes_per_connection": Figure(memory, "bytes", "fallback", _MEMORY_RATIONALE),
        "wire_overhead_bytes": Figure(wire, "bytes", "fallback", _WIRE_RATIONALE),
        "keepalive_cpu_us_per_connection_s": Figure(
            keepalive, "us/s", "fallback", _KEEPALIVE_RATIONALE
        ),
        "echo_cpu_us_per_msg": Figure(inbound + delivery, "us", "fallback", _CPU_RATIONALE),
    }


FALLBACKS: Mapping[str, Mapping[str, Figure]] = {t: _fallback_costs(t) for t in TRANSPORTS}
"""The fallback figures per transport (read-only view for reports)."""


def parse_params(params: str) -> dict[str, float | str]:
    """``"connections=50;payload=48"`` -> ``{"connections": 50.0, "payload": 48.0}``."""
    parsed: dict[str, float | str] = {}
    for item in filter(None, str(params).split(";")):
        key, _, raw = item.partition("=")
        try:
            parsed[key] = float(raw)
        except ValueError:
            parsed[key] = raw
    return parsed


def load_summary(summary: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """The summary as a DataFrame with ``value`` numeric and ``client_bound`` boolean."""
    frame = summary.copy() if isinstance(summary, pd.DataFrame) else pd.read_csv(summary)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame["params"] = frame["params"].fillna("").astype(str)
    frame["client_bound"] = frame["client_bound"].astype(str).str.lower().isin(["true", "1"])
    return frame.dropna(subset=["value"])


def _per_params(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Median over trials of ``metric``, one value per parameter point."""
    selected = rows[rows["metric"] == metric]
    return selected.groupby("params")["value"].median()


def _measured(rows: pd.DataFrame, metric: str, unit: str, note: str) -> Figure | None:
    medians = _per_params(rows, metric)
    if medians.empty or medians.median() <= 0:  # zero: below what the run could resolve
        return None
    return Figure(float(medians.median()), unit, "measured", note)


def _wire_overhead(rows: pd.DataFrame) -> Figure | None:
    medians = _per_params(rows, "bytes_down_per_msg")
    overheads = [
        value - float(parse_params(params).get("payload", 0.0)) for params, value in medians.items()
    ]
    if not overheads or pd.Series(overheads).median() <= 0:
        return None  # compressed below the payload (polling with gzip): not a per-message cost
    return Figure(
        float(pd.Series(overheads).median()),
        "bytes",
        "measured",
        "overhead scenario: bytes_down_per_msg minus payload, median over payloads",
    )


def _keepalive(rows: pd.DataFrame) -> Figure | None:
    percent = _per_params(rows, "keepalive_cpu_percent")
    per_connection = [
        value / 100 * 1e6 / float(parse_params(params)["connections"])
        for params, value in percent.items()
        if float(parse_params(params).get("connections", 0)) > 0
    ]
    if not per_connection or pd.Series(per_connection).median() <= 0:
        return None  # an idle hold too short to resolve keep-alive CPU: use the fallback
    return Figure(
        float(pd.Series(per_connection).median()),
        "us/s",
        "measured",
        "connections scenario: keepalive_cpu_percent of one core / idle connections",
    )


def _latency_curve(
    echo: pd.DataFrame,
    capacity: pd.DataFrame,
    echo_us: float,
    inbound_us: float,
    delivery_us: float,
) -> LatencyCurve:
    """From echo rows (p95 round trip versus rate) or else capacity rows (the most fan-out
    subscribers of one channel published to at ``rate`` whose p95 held within ``sla_ms``).
    When the echo rows start above the knee (their lowest rate already missed the SLA the
    capacity scenario held at less work), the capacity knee is the measured point below them:
    the knee is below the echo ladder, not absent."""
    clients = _per_params(capacity, "max_clients_within_sla")
    sla = _per_params(capacity, "sla_ms")
    knees = []
    for params, subscribers in clients.items():
        publish_rate = float(parse_params(params).get("rate", 0.0))
        if subscribers > 0 and publish_rate > 0 and params in sla.index:
            work = publish_rate * (inbound_us + subscribers * delivery_us)
            knees.append(LatencyPoint(work, float(sla[params]) * 1000, publish_rate * subscribers))
    p95 = _per_params(echo[~echo["client_bound"]], "rtt_p95_us")
    rates = {params: float(parse_params(params).get("rate", 0.0)) for params in p95.index}
    points = sorted(
        LatencyPoint(rates[params] * echo_us, float(value), rates[params])
        for params, value in p95.items()
        if rates[params] > 0
    )
    knee = min(knees, default=None)
    if (points and knee and knee.work_us_per_s < points[0].work_us_per_s
            and points[0].p95_us > knee.p95_us):
        return LatencyCurve(
            (knee, *points),
            "measured",
            "capacity scenario's knee below the echo scenario's lowest rate, then echo "
            "rtt_p95_us versus params rate",
        )
    if points:
        return LatencyCurve(
            tuple(points), "measured", "echo scenario: rtt_p95_us versus params rate"
        )
    if knee:
        return LatencyCurve(
            (knee,),
            "measured",
            "capacity scenario: rate x max_clients_within_sla deliveries held p95 <= sla_ms",
            ends_at_knee=True,
        )
    return LatencyCurve((), "fallback", "no echo or capacity rows: no measured latency curve")


def _transport_costs(transport: str, rows: pd.DataFrame) -> TransportCosts:
    fallback = FALLBACKS.get(transport) or _fallback_costs(transport)
    by_scenario = {name: group for name, group in rows.groupby("scenario")}
    empty = rows.iloc[0:0]
    echo = by_scenario.get("echo", empty)
    fanout = by_scenario.get("fanout", empty)
    connections = by_scenario.get("connections", empty)

    echo_cpu = _measured(echo, "server_cpu_us_per_msg", "us", "echo scenario, all rates")
    delivery = _measured(
        fanout, "server_cpu_us_per_delivery", "us", "fanout scenario, all subscriber counts"
    )
    delivery = delivery or fallback["cpu_us_per_delivery"]
    inbound: Figure | None = None
    if echo_cpu is not None:
        # An echo is one inbound message plus one delivery back to the sender.
        inbound_us = echo_cpu.value - delivery.value
        inbound = (
            Figure(
                inbound_us,
                "us",
                "measured",
                f"echo CPU per message minus the {delivery.source} CPU per delivery",
            )
            if inbound_us > 0
            else Figure(echo_cpu.value, "us", "measured", "echo CPU per message (whole echo)")
        )
    measured = {
        "cpu_us_per_inbound": inbound,
        "cpu_us_per_delivery": delivery,
        "cpu_us_per_connection": _measured(
            connections, "server_cpu_us_per_conn", "us", "connections scenario"
        ),
        "memory_bytes_per_connection": _measured(
            connections, "server_rss_bytes_per_conn", "bytes", "connections scenario, RSS delta"
        ),
        "wire_overhead_bytes": _wire_overhead(by_scenario.get("overhead", empty)),
        "keepalive_cpu_us_per_connection_s": _keepalive(connections),
        "echo_cpu_us_per_msg": echo_cpu,
    }
    figures = {name: figure or fallback[name] for name, figure in measured.items()}
    curve = _latency_curve(
        echo,
        by_scenario.get("capacity", empty),
        figures["echo_cpu_us_per_msg"].value,
        figures["cpu_us_per_inbound"].value,
        figures["cpu_us_per_delivery"].value,
    )
    return TransportCosts(transport=transport, latency_curve=curve, **figures)


def calibrate(
    summary: pd.DataFrame | str | os.PathLike[str] | None = None,
    transports: tuple[str, ...] = TRANSPORTS,
) -> dict[str, TransportCosts]:
    """Per-transport costs from a tidy summary (a DataFrame or a CSV path).

    ``None`` gives the fallback constants for every transport. Transports present in the
    summary but not in ``transports`` are calibrated too.
    """
    frame = load_summary(summary) if summary is not None else None
    names = list(transports)
    if frame is not None:
        names += sorted(set(frame["transport"]) - set(names))
    costs = {}
    for name in names:
        rows = (
            frame[frame["transport"] == name]
            if frame is not None
            else load_summary(pd.DataFrame(columns=list(SUMMARY_COLUMNS)))
        )
        costs[name] = _transport_costs(name, rows)
    return costs
