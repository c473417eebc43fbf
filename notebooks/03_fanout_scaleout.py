# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Fan-out and scale-out
#
# A publisher sends at a fixed rate into a channel of N subscribers; every delivery's one-way
# latency is measured from the publisher's intended send time (one host, one clock). The
# capacity scenario steps N up until fan-out p95 passes the SLA. Scale-out runs (several
# instances, a shared broker) are kept apart from one-instance runs. The answer first:

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, comparison, load, tables, text
from sobranie_bench.report.data import capacity_steps_frame, extremes, scenario_frame

res = load(RESULTS)
fanout = scenario_frame(res, "fanout", ["latency_p50_us", "latency_p99_us", "delivered_per_s",
                                        "lost", "duplicated", "server_cpu_us_per_delivery"])
p99 = extremes(res, "fanout", "latency_p99_us")
cpu = extremes(res, "fanout", "server_cpu_us_per_delivery")
if p99 and cpu:
    (best, fb), (worst, fw) = p99
    lost = int(fanout["lost"].fillna(0).sum())
    display(Markdown(
        f"Fan-out p99 runs from {text.ms(fb.value)} (**{best}**) to {text.ms(fw.value)} "
        f"(**{worst}**), all far inside a notification's deadline of seconds; {lost} "
        "acknowledged deliveries were lost. The cost that differs is CPU: one core delivers "
        f"{1e6 / cpu[0][1].value:,.0f} messages per second on **{cpu[0][0]}** and "
        f"{1e6 / cpu[1][1].value:,.0f} on **{cpu[1][0]}**."))
else:
    display(Markdown("The fan-out scenario is not in these results."))

# %%
charts.fanout(res)

# %%
tables.readable(fanout.drop(columns=["run_id"]))

# %% [markdown]
# ## One instance's capacity

# %%
charts.capacity_steps(res)

# %%
held = {t: res.value(t, "capacity", "max_clients_within_sla") for t in res.transports}
sla = next((v for t in res.transports if (v := res.value(t, "capacity", "sla_ms"))), None)
display(Markdown(
    f"Subscribers of one channel held within the {sla:g} ms p95 SLA: "
    + ", ".join(f"{t} {text.num(v)}" for t, v in held.items() if v is not None)
    + " (the last step of the ladder; a transport that held every step may hold more)."
    if sla else "The capacity scenario is not in these results."))

# %%
tables.readable(capacity_steps_frame(res).set_index("transport")).rename(
    columns={"p95_ms": "p95 (ms)"})

# %% [markdown]
# ## Scale-out: a shared broker between instances

# %%
display(Markdown(comparison.backplane(res)))
