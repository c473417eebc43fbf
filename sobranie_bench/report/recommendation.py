"""``recommendation.md``: a transport per Sobranie feature, chosen by thresholds, then by cost.

Each feature has a service level (``SLA``: a metric of this run, a threshold with its reason,
the network profile it is judged on, falling back to loopback, labelled, when that profile was
not run) and a budget. A transport *qualifies* for a feature when its measured figure meets
the SLA and the application built on it stays within the budget. Qualifying transports are
ranked by money at one million online users (server processes, hosts, egress; the capacity
model ``sobranie_bench.capacity.plan`` calibrated from the same run, priced with ``PRICE``),
costs within ``COST_TIE`` of each other counting as equal; then by reach (browser support),
then by simplicity (code and round trips, comparison.md). A sub-millisecond gap never decides
a feature whose deadline is seconds: latency only gates.

Costs are of the whole application, so they model connections per user: the *one connection*
stack carries every feature on one transport; moving a feature to another transport adds that
transport's fleet (a second connection per user), which is what the note's WebSocket + SSE
stack pays. ``flips`` says per feature what would change the choice.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sobranie_bench.harness.results import short_of_offered
from sobranie_bench.report import comparison, text
from sobranie_bench.report.data import Measured, Results, summary_frame
from sobranie_bench.report.rules import LOOPBACK, Ref, figure
from sobranie_bench.report.sources import BROWSER, technology_of

FALLBACK_POOL = ("sse", "longpoll", "socketio-polling")
"""Transports that need nothing beyond HTTP request/response through intermediaries."""
ONLINE_USERS = 1_000_000
HOURS_PER_MONTH = 730.0
COST_TIE = 0.05
"""Costs within 5% count as equal (well inside the capacity model's own error bars)."""
PLAN_JOBS = 2_000
"""Messages simulated per instance-latency check in the what-if plans (the model's default is
30,000; 2,000 keeps a report run to seconds and moves p95 by well under a millisecond)."""


@dataclass(frozen=True)
class Price:
    """What a server host and its egress cost (an assumption to edit, not a quote)."""

    host: str
    """The host the capacity model plans (``capacity.fleet.HostSpec``)."""
    usd_per_host_hour: float
    """On-demand price of one host, US dollars per hour."""
    usd_per_egress_gb: float
    """Internet egress, US dollars per GB."""
    source: str
    """Where the figures come from."""


PRICE = Price(
    host="2 vCPU / 8 GiB general-purpose VM (the model's HostSpec: 2 cores, 8 GiB, 1 Gbit/s)",
    usd_per_host_hour=0.096, usd_per_egress_gb=0.09,
    source="AWS EC2 on-demand list prices, us-east-1: m5.large $0.096/h; data transfer out to "
           "the internet $0.09/GB for the first 10 TB/month (aws.amazon.com/ec2/pricing/"
           "on-demand); an assumption of this report, edit PRICE to yours")


@dataclass(frozen=True)
class SLA:
    """A feature's service level, judged on one metric of this run."""

    scenario: str
    """``echo`` (round trip) or ``fanout`` (publish to delivery)."""
    metric: str
    """Summary metric, e.g. ``rtt_p99_us``."""
    limit_us: float
    """The figure must be at most this, microseconds."""
    network: str
    """Network profile it is judged on; loopback stands in, labelled, when it was not run."""
    why: str
    """Where the limit comes from."""


@dataclass(frozen=True)
class Feature:
    """A real-time feature of Sobranie, its SLA and budget."""

    key: str
    title: str
    direction: str
    """``both`` (clients send as much as they receive), ``push`` (server to client) or
    ``media`` (audio/video: outside this suite)."""
    capacity_features: tuple[str, ...]
    """The capacity model's features it stands for."""
    sla: SLA | None
    """None for media."""
    budget_usd_month: float
    """Highest monthly cost of the whole application at 1M online with this feature's choice."""


BUDGET = 50_000.0
"""US dollars per month for 1M online users: a product assumption, the same for each feature."""

FEATURES: tuple[Feature, ...] = (
    Feature("chat", "Chat (instant messages)", "both", ("chat",),
            SLA("echo", "rtt_p99_us", 300_000, "4g",
                "a message on screen within 300 ms at p99 on a phone: past it, a reply feels "
                "late (Nielsen's 0.1-1 s limits; a 4G round trip alone is ~50-100 ms)"), BUDGET),
    Feature("notifications", "Notifications (likes, comments, follows)", "push",
            ("notifications",),
            SLA("fanout", "latency_p99_us", 5_000_000, "4g",
                "a notification within seconds: 5 s at p99 (the note's own design polls "
                "every 5 s)"), BUDGET),
    Feature("presence", "Presence (online/offline)", "push", ("presence",),
            SLA("fanout", "latency_p99_us", 5_000_000, "4g",
                "staleness under 30 s is set by the heartbeat; delivery may take 5 s of it"),
            BUDGET),
    Feature("feed", "Live feed and counters", "push", ("feed", "counters"),
            SLA("fanout", "latency_p99_us", 2_000_000, "4g",
                "a new post or count within 2 s at p99, while the user looks at it"), BUDGET),
    Feature("collab", "Collaborative editing", "both", ("collab",),
            SLA("echo", "rtt_p99_us", 200_000, "4g",
                "a co-editor's keystroke within 200 ms at p99, or typing collides"), BUDGET),
    Feature("calls", "Calls (audio/video)", "media", (), None, BUDGET),
)


# --- SLA ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One transport against one feature's SLA."""

    transport: str
    fig: Measured | None
    """The figure judged (None: not measured)."""
    network: str
    """Profile the figure comes from (the SLA's, or loopback standing in)."""
    meets: bool
    headroom: float | None
    """limit / figure: how many times the figure could grow before the SLA breaks."""


def sla_check(res: Results, transport: str, sla: SLA) -> Check:
    for net in dict.fromkeys((sla.network, LOOPBACK)):
        fig = figure(res, Ref(transport, sla.scenario, sla.metric, network=net))
        if fig is not None:
            meets = fig.value <= sla.limit_us
            return Check(transport, fig, net, meets,
                         sla.limit_us / fig.value if fig.value > 0 else None)
    return Check(transport, None, sla.network, False, None)


# --- cost -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cost:
    """What one feature -> transport mapping costs at ``ONLINE_USERS``, per month."""

    mapping: tuple[tuple[str, str], ...]
    """Capacity feature -> transport."""
    processes: int
    """Server processes (N+1) over every fleet."""
    hosts: int
    memory_gib: float
    """Connection memory over the fleet, GiB."""
    egress_tb_month: float
    usd_month: float
    connections_per_user: int
    """Transports (so connections) each online user holds."""
    bound_by: tuple[str, ...]
    """The limit that sized each fleet."""


def price(plan: Any) -> Cost:
    """A capacity plan in money (``PRICE``)."""
    processes = sum(f.instances for f in plan.fleets)
    hosts = sum(f.hosts for f in plan.fleets)
    egress_bps = sum(f.egress_bytes_per_s_per_instance * f.instances_needed for f in plan.fleets)
    egress_gb = egress_bps * 3600 * HOURS_PER_MONTH / 1e9
    memory = sum(f.memory_bytes_per_instance * f.instances_needed for f in plan.fleets)
    usd = hosts * PRICE.usd_per_host_hour * HOURS_PER_MONTH + egress_gb * PRICE.usd_per_egress_gb
    return Cost(tuple(sorted(plan.workload.transport_for.items())), processes, hosts,
                memory / 1024 ** 3, egress_gb / 1000, usd, len(plan.fleets),
                tuple(f"{f.transport}: {f.binding}" for f in plan.fleets))


class Costing:
    """Plans and prices mappings for one results set (calibrated once, cached)."""

    def __init__(self, res: Results, online_users: int = ONLINE_USERS):
        from sobranie_bench.capacity import Workload, calibrate

        self.costs = calibrate(summary_frame(res))
        self.base = Workload(online_users=online_users)
        self.label = f"calibrated from run {res.main_run}"
        self.errors: dict[tuple[tuple[str, str], ...], str] = {}

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Costing per report run
    def _cost(self, mapping: tuple[tuple[str, str], ...]) -> Cost | None:
        from sobranie_bench.capacity import plan

        try:
            planned = plan(workload=self.base.with_(transport_for=dict(mapping)),
                           costs=self.costs, calibration=self.label, latency_jobs=PLAN_JOBS)
        except Exception as exc:  # noqa: BLE001 - the model's failure is shown, not hidden
            self.errors[mapping] = f"{type(exc).__name__}: {exc}"
            return None
        if planned.infeasible:  # a fleet no size serves: the mapping has no price
            self.errors[mapping] = "; ".join(f"{r.transport}: {r.reason}"
                                             for r in planned.infeasible)
            return None
        return price(planned)

    def cost(self, mapping: Mapping[str, str]) -> Cost | None:
        return self._cost(tuple(sorted(mapping.items())))

    def one(self, transport: str) -> Cost | None:
        """Every feature on one transport: one connection per user."""
        from sobranie_bench.capacity.workload import FEATURES as CAP_FEATURES

        return self.cost(dict.fromkeys(CAP_FEATURES, transport))


# --- choosing --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One transport for one feature: SLA check, cost of the app with it, reach, simplicity."""

    transport: str
    check: Check
    cost: Cost | None
    """Whole app at 1M online with this feature on this transport, the rest on the base."""
    reach: int
    """Browser-support stars (sources.BROWSER)."""
    complexity: float | None
    """Code x round trips over the simplest (comparison.complexity; 1 = simplest)."""

    @property
    def qualifies(self) -> bool:
        return self.check.meets and self.cost is not None

    def within(self, budget: float) -> bool:
        return self.cost is not None and self.cost.usd_month <= budget


@dataclass(frozen=True)
class Choice:
    feature: Feature
    base: str | None
    """The transport of the one-connection stack the other features stay on."""
    ranking: list[Option]
    """Options meeting the SLA and budget, best first."""
    rejected: list[tuple[Option, str]]
    """Options that do not, with why."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Transports not measured for this feature's SLA."""

    @property
    def winner(self) -> str | None:
        return self.ranking[0].transport if self.ranking else None

    @property
    def fallback(self) -> str | None:
        for o in (*self.ranking, *(o for o, _ in self.rejected)):
            if o.transport in FALLBACK_POOL and o.transport != self.winner and o.check.meets:
                return o.transport
        return None


def _key(o: Option, cheapest: float) -> tuple[float, int, float]:
    usd = o.cost.usd_month if o.cost else float("inf")
    band = 0.0 if usd <= cheapest * (1 + COST_TIE) else usd
    return band, -o.reach, o.complexity or float("inf")


def rank(options: Sequence[Option]) -> list[Option]:
    """Cheapest first; costs within COST_TIE of the cheapest tie, then reach, then simplicity."""
    if not options:
        return []
    cheapest = min(o.cost.usd_month for o in options if o.cost)
    return sorted(options, key=lambda o: _key(o, cheapest))


def base_transport(res: Results, costing: Costing) -> str | None:
    """The one-connection stack: the cheapest transport meeting every feature's SLA (ties by
    reach); failing that, the one meeting the most."""
    best: tuple[Any, ...] | None = None
    pick = None
    for t in res.with_figures:
        met = sum(sla_check(res, t, f.sla).meets for f in FEATURES if f.sla)
        cost = costing.one(t)
        if cost is None:
            continue
        tech = technology_of(t)
        key = (-met, cost.usd_month, -(BROWSER[tech].stars if tech else 0))
        if best is None or key < best:
            best, pick = key, t
    return pick


def choose(res: Results, feature: Feature, costing: Costing, base: str | None) -> Choice:
    if feature.sla is None or base is None:
        return Choice(feature, base, [], [])
    from sobranie_bench.capacity.workload import FEATURES as CAP_FEATURES

    options, rejected, excluded = [], [], {}
    for t in res.with_figures:
        check = sla_check(res, t, feature.sla)
        if check.fig is None:
            excluded[t] = f"{feature.sla.scenario} not measured"
            continue
        mapping = dict.fromkeys(CAP_FEATURES, base)
        mapping.update(dict.fromkeys(feature.capacity_features, t))
        tech = technology_of(t)
        o = Option(t, check, costing.cost(mapping), BROWSER[tech].stars if tech else 0,
                   comparison.complexity(res, t).ratio)
        if not check.meets:
            rejected.append((o, (f"misses the SLA: {text.ms(check.fig.value)} > "
                                f"{text.ms(feature.sla.limit_us)}")))
        elif o.cost is None:
            why = costing.errors.get(tuple(sorted(mapping.items())), "")
            rejected.append((o, "the capacity model could not plan it" + (f" ({why})" if why
                                                                           else "")))
        elif not o.within(feature.budget_usd_month):
            rejected.append((o, (f"over budget: {usd(o.cost.usd_month)} > "
                                f"{usd(feature.budget_usd_month)}")))
        else:
            options.append(o)
    return Choice(feature, base, rank(options), rejected, excluded)


_Chosen = tuple[dict[str, Choice], "Costing | None", "str | None"]
_CACHE: dict[int, tuple[Results, _Chosen]] = {}


def _choices(res: Results) -> _Chosen:
    """Choices for ``res``, computed once per Results object (the last few kept)."""
    hit = _CACHE.get(id(res))
    if hit is not None and hit[0] is res:
        return hit[1]
    if res.empty:
        out: _Chosen = ({f.key: Choice(f, None, [], []) for f in FEATURES}, None, None)
    else:
        costing = Costing(res)
        base = base_transport(res, costing)
        out = ({f.key: choose(res, f, costing, base) for f in FEATURES}, costing, base)
    if len(_CACHE) >= 4:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(res)] = (res, out)
    return out


def choices(res: Results) -> dict[str, Choice]:
    return _choices(res)[0]


def usd(value: float) -> str:
    return f"${value:,.0f}"


# --- throughput at the SLA (the ladders) ------------------------------------------------------

@dataclass(frozen=True)
class Ladder:
    """One transport's rate ladder in one scenario, read against an SLA."""

    transport: str
    rungs: int
    """Points of the ladder measured (a rung the runner skipped is not one)."""
    held: float | None
    """Highest offered events/s whose p99 met the SLA and whose achieved rate kept up
    (``results.short_of_offered``: 95%);
    None when even the first rung broke it."""
    per_core: float | None
    """Events per second per server core at that rung (1e6 / server CPU µs per event)."""
    stopped: str
    """Why the reading stopped, a key of ``STOPPED``: the first rung that broke it was
    client-bound in most trials, or missed the SLA's p99, or fell short of the offered rate;
    ``top`` when no rung broke it (``held`` is then a bound)."""

    @property
    def broke(self) -> bool:
        """Whether some rung broke the reading (False: the ladder ended first)."""
        return self.stopped != "top"


STOPPED = {
    "client_bound": "the harness could not offer it (client-bound: {machine}'s limit, not "
                    "the server's)",
    "sla": "p99 over the SLA",
    "saturated": "short of the offered rate (saturated)",
    "top": "ladder top (a bound)",
}
"""What stopped a ladder's reading, as its table says it ({machine}: the run's host)."""

LADDERS = (("echo", "rate", "rtt_p99_us", "throughput_msgs_per_s", "server_cpu_us_per_msg",
            "chat"),
           ("fanout", "subscribers", "latency_p99_us", "delivered_per_s",
            "server_cpu_us_per_delivery", "notifications"))


def _mostly_client_bound(res: Results, transport: str, scenario: str, point: str) -> bool:
    """Whether most trials of the point were flagged client-bound (the harness, not the
    server, was the limit)."""
    rows = res.rows
    trials = rows[(rows["transport"] == transport) & (rows["scenario"] == scenario)
                  & (rows["params"] == point)].groupby("trial")["client_bound"].any()
    return bool(trials.sum() * 2 > len(trials))


def ladder(res: Results, transport: str, scenario: str) -> Ladder | None:
    """Read ``transport``'s ladder in ``scenario`` against the SLA of the feature it serves."""
    spec = next(x for x in LADDERS if x[0] == scenario)
    _, _, p99_m, got_m, cpu_m, key = spec
    sla = next(f.sla for f in FEATURES if f.key == key)
    assert sla is not None
    measured = []
    for point in res.params_points(scenario, transport):
        p99 = res.value(transport, scenario, p99_m, point)
        got = res.value(transport, scenario, got_m, point)
        params = dict(i.split("=", 1) for i in point.split(";") if "=" in i)
        offered = float(params.get("rate", 0)) * (float(params["subscribers"])
                                                  if scenario == "fanout" else 1.0)
        if p99 is not None and got is not None and offered > 0:
            measured.append((point, p99, got, offered))
    if not measured:
        return None
    held = per_core = None
    stopped = "top"
    for point, p99, got, offered in measured:
        if p99 > sla.limit_us or short_of_offered(got / offered):
            stopped = ("client_bound" if _mostly_client_bound(res, transport, scenario, point)
                       else "sla" if p99 > sla.limit_us else "saturated")
            break
        held = offered
        cpu = res.value(transport, scenario, cpu_m, point)
        per_core = 1e6 / cpu if cpu else None
    return Ladder(transport, len(measured), held, per_core, stopped)


def ladder_rows(res: Results, scenario: str) -> list[list[str]]:
    cores = res.metadata().get("cores")
    machine = f"the {cores}-core machine" if cores else "the load machine"
    rows = []
    for t in res.with_figures:
        lad = ladder(res, t, scenario)
        if lad is None:
            continue
        held = ("broke at the first rung" if lad.held is None else
                f"{text.num(lad.held)}/s" if lad.broke else f"≥ {text.num(lad.held)}/s")
        rows.append([t, str(lad.rungs), held, STOPPED[lad.stopped].format(machine=machine),
                     f"{text.num(lad.per_core)}/s" if lad.per_core else "—"])
    return rows


def ladders_section(res: Results) -> list[str]:
    out = ["## Throughput at the SLA", "",
           ("Each transport's ladder (offered rate rising per point) read against the SLA of "
            "the feature it serves: the highest rung whose p99 met it and whose achieved rate "
            "kept up, what one server core delivers there, and what stopped the reading at the "
            "next rung: the SLA's p99, the server falling short of the offered rate, the "
            "harness itself (client-bound in most trials: then the figure is the load "
            "machine's, not the server's), or the top of the ladder (≥: a bound). Rungs count "
            "the points measured; the runner skips a transport's rungs above one that "
            "saturated. A ladder of one point (the ci profile) says little; the standard "
            "profile climbs until the SLA breaks."), ""]
    for scenario, _x, _p, _g, _c, key in LADDERS:
        rows = ladder_rows(res, scenario)
        title = next(f.title for f in FEATURES if f.key == key)
        if rows:
            out += [f"{scenario} (against the {title.split(' (')[0].lower()} SLA):", "",
                    text.table(["Transport", "Rungs", "Held within SLA", "Stopped by",
                                "Per server core"], rows), ""]
    return out


# --- what would flip it ----------------------------------------------------------------------

NOTE_CHOICE = {"chat": "ws", "collab": "ws", "presence": "ws", "notifications": "sse",
               "feed": "sse"}
"""The note's transport per feature (WebSockets + SSE)."""


def flips(choice: Choice) -> list[str]:
    """Sentences saying what would change this feature's choice."""
    if not choice.ranking:
        return []
    win = choice.ranking[0]
    sla = choice.feature.sla
    assert sla is not None and win.cost is not None
    out = []
    if win.check.headroom is not None:
        out.append(f"{win.transport} keeps the SLA until its {sla.metric.split('_')[1]} grows "
                   f"{win.check.headroom:,.1f}× (from {text.ms(win.check.fig.value)} to "  # type: ignore[union-attr]
                   f"{text.ms(sla.limit_us)})")
    note = NOTE_CHOICE.get(choice.feature.key)
    others = [o for o in choice.ranking[1:3]] + [o for o in choice.ranking[3:]
                                                 if o.transport == note]
    for o in others:
        assert o.cost is not None
        gap = o.cost.usd_month - win.cost.usd_month
        if gap <= win.cost.usd_month * COST_TIE:
            why = ("reach" if o.reach != win.reach else "simplicity")
            out.append(f"{o.transport} costs the same within {COST_TIE:.0%} "
                       f"({usd(o.cost.usd_month)}); {win.transport} wins on {why}")
        else:
            out.append(f"{o.transport} would win if its cost fell by "
                       f"{gap / o.cost.usd_month:.0%} ({usd(o.cost.usd_month)} → below "
                       f"{usd(win.cost.usd_month * (1 + COST_TIE))}/month)")
    if note and note != win.transport and not any(o.transport == note for o in others):
        out.append(f"the note's {note} is not among the qualifying options here")
    for o, why in choice.rejected:
        if o.check.fig is not None and not o.check.meets and o.check.headroom:
            out.append(f"{o.transport} would qualify if its {sla.metric.split('_')[1]} fell "
                       f"{1 / o.check.headroom:,.1f}× ({why})")
            break
    if win.cost.usd_month > 0:
        out.append(f"a budget below {usd(win.cost.usd_month)}/month leaves no transport")
    return out


# --- capacity of the recommended mapping and the note's stack --------------------------------

@dataclass
class Capacity:
    """Capacity plans for the recommended mapping and for the note's stack."""

    ours: Any = None
    """capacity Plan for our recommended transports (None if the model is unavailable)."""
    note: Any = None
    """capacity Plan for the note's stack (WebSocket for chat, presence, editing; SSE for
    notifications, feed, counters)."""
    notes: list[str] = field(default_factory=list)
    """Substitutions made and errors met."""


def transport_for(chosen: Mapping[str, Choice]) -> dict[str, str] | None:
    """The capacity workload's feature -> transport mapping of our choices (None when some
    measurable feature has no choice)."""
    mapping = {}
    for choice in chosen.values():
        if choice.feature.direction == "media":
            continue
        if choice.winner is None:
            return None
        for cap_feature in choice.feature.capacity_features:
            mapping[cap_feature] = choice.winner
    return mapping


_CAPACITY: dict[tuple[int, int, int], tuple[Results, Mapping[str, Choice], Capacity]] = {}


def capacity(res: Results, chosen: Mapping[str, Choice], online_users: int = ONLINE_USERS
             ) -> Capacity:
    """Plan our mapping and the note's with the capacity model, calibrated from ``res``
    (once per Results object, choices and online users: the pages, claims and docs all ask)."""
    key = (id(res), id(chosen), online_users)
    hit = _CAPACITY.get(key)
    if hit is not None and hit[0] is res and hit[1] is chosen:
        return hit[2]
    out = _capacity(res, chosen, online_users)
    if len(_CAPACITY) >= 4:
        _CAPACITY.pop(next(iter(_CAPACITY)))
    _CAPACITY[key] = (res, chosen, out)
    return out


def _capacity(res: Results, chosen: Mapping[str, Choice], online_users: int) -> Capacity:
    out = Capacity()
    from sobranie_bench.capacity import Workload, calibrate
    from sobranie_bench.capacity.tables import calibrated_plan
    from sobranie_bench.capacity.workload import DEFAULT_TRANSPORT_FOR

    if res.empty:
        out.notes.append("no results: the capacity model would run on fallback constants only")
        return out
    costs = calibrate(summary_frame(res))
    base = Workload(online_users=online_users)
    label = f"calibrated from run {res.main_run}"
    mapping = transport_for(chosen)
    try:
        if mapping:
            out.ours, _, notes = calibrated_plan(costs, Path(res.root) / "calibrate",
                                                 workload=base.with_(transport_for=mapping),
                                                 calibration=label)
            out.notes += notes
        else:
            out.notes.append("no transport meets some feature's SLA: no plan")
        note_stack = dict(DEFAULT_TRANSPORT_FOR)
        if all(t in costs for t in note_stack.values()):
            out.note, _, notes = calibrated_plan(costs, Path(res.root) / "calibrate",
                                                 workload=base.with_(transport_for=note_stack),
                                                 calibration=label)
            out.notes += [n for n in notes if n not in out.notes]
    except Exception as exc:  # noqa: BLE001 - report the model's failure, do not hide it
        out.notes.append(f"capacity model failed: {type(exc).__name__}: {exc}")
    return out


def fleet_rows(plan: Any) -> list[list[str]]:
    from sobranie_bench.capacity.errors import processes_text

    rows = []
    for f in plan.fleets:
        rows.append([
            f.transport, ", ".join(f.features), processes_text(f), str(f.hosts), f.binding,
            f"{f.cpu_utilisation:.0%}", text.nbytes(f.memory_bytes_per_instance),
            text.ms(f.p95_delivery_s * 1e6), text.num(f.deliveries_per_s),
            str(f.redis_classic.shards or "none fits"), str(f.redis_sharded.shards),
            ", ".join(f.fallbacks) or "none",
        ])
    for row in getattr(plan, "infeasible", ()):  # a measured fact, where the count would be
        rows.append([row.transport, ", ".join(row.features), row.reason,
                     *("—" for _ in FLEET_HEADERS[3:])])
    return rows


FLEET_HEADERS = ["Transport", "Features", "Processes (N+1, ± bootstrap)", "Hosts", "Bound by",
                 "CPU at N", "Connection memory / process", "p95 delivery (model)", "Deliveries/s",
                 "Redis nodes (classic pub/sub)", "Redis shards (sharded pub/sub)",
                 "Fallback figures"]


# --- rendering -------------------------------------------------------------------------------

def _sla_text(sla: SLA) -> str:
    what = "echo round trip" if sla.scenario == "echo" else "publish-to-delivery"
    return f"{what} p99 ≤ {text.ms(sla.limit_us)} on {sla.network}"


def _figure_cell(check: Check) -> str:
    if check.fig is None:
        return text.NOT_MEASURED
    net = "" if check.network != LOOPBACK else " (loopback)"
    return text.measured(check.fig, "ms") + net


def _option_row(o: Option, verdict: str) -> list[str]:
    c = o.cost
    return [o.transport, verdict, _figure_cell(o.check),
            text.ratio(o.check.headroom) if o.check.headroom and o.check.meets else "—",
            usd(c.usd_month) if c else "—", str(c.processes) if c else "—",
            f"{c.memory_gib:,.1f}" if c else "—", f"{c.egress_tb_month:,.1f}" if c else "—",
            str(c.connections_per_user) if c else "—", text.stars(o.reach),
            f"{o.complexity:.1f}×" if o.complexity else "—"]


OPTION_HEADERS = ["Transport", "Verdict", "p99 (judged)", "SLA headroom", "App cost / month",
                  "Processes", "Connection memory (GiB)", "Egress (TB/month)",
                  "Connections / user", "Reach", "Complexity"]


def feature_section(choice: Choice) -> list[str]:
    f = choice.feature
    lines = [f"### {f.title}", ""]
    if f.sla is None:
        return lines + [("**WebRTC media** (SRTP over ICE, peer-to-peer or through an SFU), "
                         "with TURN as the path of last resort. Not measured here: this suite "
                         "carries messages, not audio or video, so no figure backs this row."),
                        ""]
    lines += [(f"SLA: {_sla_text(f.sla)} ({f.sla.why}). Budget: {usd(f.budget_usd_month)}/month "
              f"for the application at {ONLINE_USERS:,} online."), ""]
    nets = {o.check.network for o in (*choice.ranking, *(o for o, _ in choice.rejected))}
    if f.sla.network not in nets:
        lines += [(f"*No {f.sla.network} run in these results: judged on loopback, which "
                  "flatters every transport by the network's round trips.*"), ""]
    if not choice.ranking:
        lines += ["No measured transport meets the SLA within the budget.", ""]
    else:
        win = choice.ranking[0]
        lines += [(f"**Recommended: {win.transport}**; fallback over plain HTTP: "
                  f"**{choice.fallback or 'none meets the SLA'}**."), ""]
    rows = [_option_row(o, "meets" if i else "**chosen**") for i, o in enumerate(choice.ranking)]
    rows += [_option_row(o, why) for o, why in choice.rejected]
    lines += [text.table(OPTION_HEADERS, rows), ""]
    if choice.excluded:
        lines += ["Not judged: " + "; ".join(f"{t} ({why})" for t, why in
                                               choice.excluded.items()) + ".", ""]
    flip = flips(choice)
    if flip:
        lines += ["What would flip it:", "", *(f"- {s}" for s in flip), ""]
    return lines


def render(res: Results, online_users: int = ONLINE_USERS) -> str:
    chosen, costing, base = _choices(res)
    summary_rows = []
    for choice in chosen.values():
        f = choice.feature
        if f.sla is None:
            summary_rows.append([f.title, "WebRTC media (not measured here)", "—", "TURN relay",
                                 "—", "—"])
            continue
        win = choice.ranking[0] if choice.ranking else None
        summary_rows.append([
            f.title, win.transport if win else "none meets the SLA",
            _sla_text(f.sla), choice.fallback or "—",
            _figure_cell(win.check) if win else "—",
            usd(win.cost.usd_month) if win and win.cost else "—"])
    parts = [
        "# Recommendation: which transport for which Sobranie feature",
        "",
        (f"Generated by `sobranie-bench report` from run {res.main_run or '(none)'}. A "
         "transport qualifies for a feature when its measured p99 meets the feature's SLA and "
         "the application stays within budget; qualifying transports are ranked by money at "
         f"{online_users:,} online users (capacity model calibrated on this run), costs within "
         f"{COST_TIE:.0%} counting as equal, then by browser reach, then by simplicity. "
         "Latency only gates: a sub-millisecond gap never decides a feature whose deadline is "
         "seconds."),
        "",
        text.table(["Feature", "Transport", "SLA", "Fallback", "p99 measured", "App cost / month"],
                   summary_rows),
        "",
    ]
    if costing is not None:
        parts += _connections_section(chosen, costing, base)
    parts += ladders_section(res)
    parts += ["## Prices", "",
              (f"Host: {PRICE.host}, ${PRICE.usd_per_host_hour:g}/hour; egress "
               f"${PRICE.usd_per_egress_gb:g}/GB; {HOURS_PER_MONTH:g} hours a month. "
               f"Source: {PRICE.source}."), "", "## Per feature", ""]
    for choice in chosen.values():
        parts += feature_section(choice)
    cap = capacity(res, chosen, online_users)
    parts += [f"## Fleets at {online_users:,} online users", ""]
    if cap.ours is not None:
        parts += [("Our mapping (`sobranie_bench.capacity.plan`, an instance is one event-loop "
                  f"process; p95 delivery objective {cap.ours.slo_s * 1000:.0f} ms; "
                  f"{cap.ours.calibration}):"), "",
                  text.table(FLEET_HEADERS, fleet_rows(cap.ours)), ""]
    if cap.note is not None:
        parts += ["The note's stack (WebSockets + SSE) on the same model:", "",
                  text.table(FLEET_HEADERS, fleet_rows(cap.note)), ""]
    parts += [f"- {n}" for n in cap.notes] + ([""] if cap.notes else [])
    from sobranie_bench.capacity.tables import validation_markdown

    parts += validation_markdown(Path(res.root) / "calibrate", text.table)
    if costing is not None and costing.errors:
        parts += ["The capacity model failed on some mappings (shown, not hidden):", "",
                  *(f"- {dict(m)}: {e}" for m, e in costing.errors.items()), ""]
    parts += [("Workload assumptions (messages per user, room sizes, presence audience) are "
               "the model's defaults, `sobranie_bench.capacity.Workload`; 'none fits' for "
               "Redis means classic pub/sub cannot carry the publish rate on any node count."),
              ""]
    return "\n".join(parts)


def _connections_section(chosen: Mapping[str, Choice], costing: Costing, base: str | None
                         ) -> list[str]:
    from sobranie_bench.capacity.workload import DEFAULT_TRANSPORT_FOR

    rows = []
    stacks: list[tuple[str, Mapping[str, str]]] = []
    if base:
        from sobranie_bench.capacity.workload import FEATURES as CAP_FEATURES
        stacks.append((f"one connection: everything on {base}", dict.fromkeys(CAP_FEATURES, base)))
    ours = transport_for(chosen)
    if ours:
        stacks.append(("our choices", ours))
    stacks.append(("two connections: the note's WebSocket + SSE", dict(DEFAULT_TRANSPORT_FOR)))
    for name, mapping in stacks:
        c = costing.cost(mapping)
        rows.append([name, str(c.connections_per_user) if c else "—",
                     str(c.processes) if c else "—", str(c.hosts) if c else "—",
                     f"{c.memory_gib:,.1f}" if c else "—",
                     f"{c.egress_tb_month:,.1f}" if c else "—",
                     usd(c.usd_month) if c else "model failed"])
    return ["## One connection per user, or two", "",
            ("The whole application at 1M online users, each stack planned by the capacity "
             "model; a second transport is a second connection per user and a second fleet."),
            "", text.table(["Stack", "Connections / user", "Processes", "Hosts",
                            "Connection memory (GiB)", "Egress (TB/month)", "Cost / month"],
                           rows), ""]


def write(res: Results, out_dir: Path, online_users: int = ONLINE_USERS) -> Path:
    path = Path(out_dir) / "recommendation.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(res, online_users))
    return path


# --- frames for the notebooks ----------------------------------------------------------------

def choice_frame(res: Results) -> pd.DataFrame:
    """Feature -> chosen transport, SLA, measured p99 (ms), cost per month (USD), fallback."""
    records = []
    for choice in choices(res).values():
        f, win = choice.feature, (choice.ranking[0] if choice.ranking else None)
        records.append({
            "Feature": f.title,
            "Transport": win.transport if win else ("WebRTC media" if f.sla is None else "—"),
            "SLA": _sla_text(f.sla) if f.sla else "not measured",
            "p99 (ms)": round(win.check.fig.value / 1000, 1) if win and win.check.fig else None,
            "App cost / month (USD)": round(win.cost.usd_month) if win and win.cost else None,
            "Fallback": choice.fallback or "—"})
    return pd.DataFrame.from_records(records).set_index("Feature")


def options_frame(res: Results, key: str) -> pd.DataFrame:
    """Every judged transport of one feature: p99 (ms), SLA met, cost (USD/month), reach."""
    choice = choices(res)[key]
    rows = [(o, "chosen" if i == 0 else "meets") for i, o in enumerate(choice.ranking)]
    rows += [(o, why) for o, why in choice.rejected]
    return pd.DataFrame.from_records([{
        "Transport": o.transport, "Verdict": v,
        "p99 (ms)": round(o.check.fig.value / 1000, 2) if o.check.fig else None,
        "p99 low (ms)": round(o.check.fig.low / 1000, 2) if o.check.fig else None,
        "p99 high (ms)": round(o.check.fig.high / 1000, 2) if o.check.fig else None,
        "Network": o.check.network,
        "App cost / month (USD)": round(o.cost.usd_month) if o.cost else None,
        "Processes": o.cost.processes if o.cost else None,
        "Reach (stars)": o.reach} for o, v in rows]).set_index("Transport")


def stacks_frame(res: Results) -> pd.DataFrame:
    """One connection vs two: the stacks' processes, memory, egress and cost."""
    _chosen, costing, base = _choices(res)
    if costing is None:
        return pd.DataFrame()
    from sobranie_bench.capacity.workload import DEFAULT_TRANSPORT_FOR
    from sobranie_bench.capacity.workload import FEATURES as CAP_FEATURES
    stacks = {f"everything on {base}": dict.fromkeys(CAP_FEATURES, base or "ws"),
              "note: WebSocket + SSE": dict(DEFAULT_TRANSPORT_FOR)}
    records = []
    for name, mapping in stacks.items():
        c = costing.cost(mapping)
        if c is not None:
            records.append({"Stack": name, "Connections / user": c.connections_per_user,
                            "Processes": c.processes, "Connection memory (GiB)":
                            round(c.memory_gib, 1), "Egress (TB/month)": round(c.egress_tb_month, 1),
                            "Cost / month (USD)": round(c.usd_month)})
    return pd.DataFrame.from_records(records).set_index("Stack")


def plan_each(costs: Mapping[str, Any], online_users: int, transports: Sequence[str]
              ) -> tuple[list[Any], list[str]]:
    """Each transport planned as if it carried every feature alone (``capacity.plan`` what-if);
    a transport the model cannot plan is left out, with the model's reason."""
    from sobranie_bench.capacity import plan

    fleets, notes = [], []
    for t in transports:
        try:
            planned = plan(online_users, costs=costs, transports=[t])
            fleets += list(planned.fleets)
            notes += [f"{t}: not planned: {row.reason}" for row in planned.infeasible]
        except Exception as exc:  # noqa: BLE001 - the reason is reported, not hidden
            notes.append(f"{t}: not planned ({type(exc).__name__}: {exc})")
    return fleets, notes


def fleet_frame(plan: Any) -> pd.DataFrame:
    """A capacity plan's fleets (or a list of fleets) as a DataFrame (numbers, not strings)."""
    fleets = getattr(plan, "fleets", plan)
    return pd.DataFrame.from_records([{
        "transport": f.transport, "features": ", ".join(f.features),
        "instances": f.instances, "bound by": f.binding, "cpu": f.cpu_utilisation,
        "memory per instance (GiB)": f.memory_bytes_per_instance / 1024 ** 3,
        "p95 delivery (ms)": f.p95_delivery_s * 1000, "deliveries/s": f.deliveries_per_s,
        "redis nodes (classic)": f.redis_classic.shards,
        "redis shards (sharded)": f.redis_sharded.shards,
        "fallback figures": ", ".join(f.fallbacks)} for f in fleets],
        columns=["transport", "features", "instances", "bound by", "cpu",
                 "memory per instance (GiB)", "p95 delivery (ms)", "deliveries/s",
                 "redis nodes (classic)", "redis shards (sharded)", "fallback figures"],
    ).set_index("transport")


def calibration_frame(costs: Mapping[str, Any]) -> pd.DataFrame:
    """Per transport and figure: value, unit and whether it was measured or a fallback."""
    return pd.DataFrame.from_records([
        {"transport": name, "figure": fig_name, "value": fig.value, "unit": fig.unit,
         "source": fig.source}
        for name, tc in costs.items() for fig_name, fig in tc.figures().items()])
