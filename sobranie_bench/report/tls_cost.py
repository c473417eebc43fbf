"""The comparison's "TLS cost per message and per handshake" table, from one run that measured
the same points plaintext and over TLS (``sobranie-bench run --tls-compare``).

Per transport: the server's CPU per echoed message both ways (the record encryption per
message), its CPU per connect in the ``connections`` ramp both ways (the difference is what the
TLS handshake costs the server), the handshake round trips the ``overhead`` scenario counted
both ways, the bytes per message on the wire at 64 B (TLS records' framing) and the memory per
open connection. A transport
shows only when its plaintext and TLS figures come from the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sobranie_bench.report import text
from sobranie_bench.report.data import Measured, Results

HEADERS = ("Transport", "Run", "CPU / msg plaintext (µs)", "CPU / msg TLS (µs)",
           "TLS per msg", "CPU / connect plaintext (µs)", "CPU / connect TLS (µs)",
           "TLS per handshake (µs)", "Handshake RTTs (plaintext → TLS, counted)",
           "Bytes / msg at 64 B (plaintext → TLS)", "Memory / connection (plaintext → TLS)")


@dataclass(frozen=True)
class Pair:
    """One metric of one transport, plaintext and TLS, from the same run."""

    plain: Measured | None
    """The plaintext trials' figure."""
    tls: Measured | None
    """The TLS trials' figure."""

    @property
    def both(self) -> tuple[Measured, Measured] | None:
        """(plaintext, TLS) when both were measured in one run, else None."""
        if self.plain is None or self.tls is None or self.plain.run_id != self.tls.run_id:
            return None
        return self.plain, self.tls

    @property
    def extra(self) -> float | None:
        """What TLS adds (TLS − plaintext)."""
        return None if self.both is None else self.both[1].value - self.both[0].value

    @property
    def ratio(self) -> float | None:
        """TLS ÷ plaintext."""
        if self.both is None or self.both[0].value <= 0:
            return None
        return self.both[1].value / self.both[0].value


def pair(res: Results, transport: str, scenario: str, metric: str,
         params: str | None = None) -> Pair:
    return Pair(res.figure(transport, scenario, metric, params, tls=False),
                res.figure(transport, scenario, metric, params, tls=True))


@dataclass(frozen=True)
class Cost:
    """The TLS cost of one transport."""

    transport: str
    run_id: str
    """The run both modes come from (the echo's, else the first scenario measured both ways)."""
    per_message: Pair
    """Server CPU per echoed message (µs), echo scenario at its reference point."""
    per_connect: Pair
    """Server CPU per connection set up (µs), connections scenario's ramp."""
    round_trips: Pair
    """Handshake round trips before the first message, counted by the overhead relay."""
    wire: Pair
    """Bytes on the wire per delivered message at 64 B, overhead scenario."""
    memory: Pair
    """Server memory per open connection (RSS slope), connections scenario."""

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return self.per_message, self.per_connect, self.round_trips, self.wire, self.memory


def costs(res: Results) -> list[Cost]:
    """One :class:`Cost` per transport that has at least one metric both ways in one run
    (the ``--tls-compare`` runs of ``res``, or ``res`` itself when it holds only those)."""
    res = res.tls_compared or res
    out = []
    for t in res.transports:
        echo = res.reference_params("echo", res.peers(t, "echo"))
        small = res.point("overhead", t, payload=64)
        cost = Cost(t, "", pair(res, t, "echo", "server_cpu_us_per_msg", echo),
                    pair(res, t, "connections", "server_cpu_us_per_conn"),
                    pair(res, t, "overhead", "handshake_round_trips", small),
                    pair(res, t, "overhead", "bytes_per_msg", small),
                    pair(res, t, "connections", "server_rss_bytes_per_conn"))
        both = [p.both for p in cost.pairs if p.both is not None]
        if both:
            out.append(Cost(t, both[0][0].run_id, *cost.pairs))
    return out


def _cells(p: Pair, fmt: str) -> list[str]:
    if p.both is None:
        return [text.NOT_MEASURED] * 2
    return [text.measured(p.both[0], fmt), text.measured(p.both[1], fmt)]


def _arrow(p: Pair, show: Callable[[float | None], str]) -> str:
    return text.NOT_MEASURED if p.both is None else \
        f"{show(p.both[0].value)} → {show(p.both[1].value)}"


def _signed(value: float | None) -> str:
    return text.NOT_MEASURED if value is None else \
        f"{'+' if value >= 0 else '−'}{text.num(abs(value))}"


def table_rows(res: Results) -> list[list[str]]:
    rows = []
    for c in costs(res):
        msg, conn, rtt, wire, memory = c.pairs
        per_msg = _signed(msg.extra)
        if msg.ratio is not None:
            per_msg += f" µs ({text.ratio(msg.ratio)})"
        rows.append([c.transport, c.run_id, *_cells(msg, "num"), per_msg,
                     *_cells(conn, "num"), _signed(conn.extra), _arrow(rtt, lambda v: f"{v:g}"),
                     _arrow(wire, text.nbytes), _arrow(memory, text.nbytes)])
    return rows


def section(res: Results) -> str:
    """The Markdown section (its heading included)."""
    head = "## TLS cost per message and per handshake"
    rows = table_rows(res)
    if not rows:
        return (f"{head}\n\n**Not measured.** No run holds the same points plaintext and "
                "over TLS; `sobranie-bench run --tls-compare --scenarios echo,connections,"
                "overhead` measures both on fresh servers in one run.\n")
    return "\n".join([head, "", (
        "The same points run plaintext and over TLS 1.3 (full handshakes: no session "
        "resumption) on fresh servers, in one run (`run --tls-compare`). *TLS per msg* is the "
        "server CPU TLS adds to each echoed message (record encryption and decryption); *TLS "
        "per handshake* is the server CPU TLS adds to each connect of the connections ramp "
        "(the handshake's key exchange and signature, the ramp's other work being the same "
        "both ways). Round trips are counted by the overhead scenario's relay before the "
        "first message (TCP's own excluded); memory is the slope of server RSS over the "
        "connections ramp (TLS keeps per-connection state). Medians over trials, spread in "
        "brackets; a "
        "difference of two noisy figures can be noisier than either (negative = within "
        "the noise)."), "", text.table(HEADERS, rows), ""])
