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
# instances behind a balancer, a shared broker) are kept apart from one-instance runs.

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, comparison, load, text
from sobranie_bench.report.data import capacity_steps_frame, extremes, scenario_frame

res = load(RESULTS)
fanout = scenario_frame(res, "fanout", ["latency_p50_us", "latency_p99_us", "delivered_per_s",
                                        "published", "delivered", "lost", "duplicated",
                                        "server_cpu_us_per_delivery"])
fanout

# %%
charts.fanout(res)

# %%
p99 = extremes(res, "fanout", "latency_p99_us")
if p99:
    (best, fb), (worst, fw) = p99
    lost = int(fanout["lost"].fillna(0).sum())
    dup = int(fanout["duplicated"].fillna(0).sum())
    display(Markdown(
        f"Fan-out p99 ranges from {text.ms(fb.value)} (**{best}**) to {text.ms(fw.value)} "
        f"(**{worst}**, {fw.value / fb.value:.1f}×, run {fb.run_id}). Across transports "
        f"{lost} acknowledged deliveries were lost and {dup} duplicated."))
else:
    display(Markdown("The fan-out scenario is not in these results."))

# %% [markdown]
# ## One instance's capacity

# %%
steps = capacity_steps_frame(res)
steps

# %%
held = {t: res.value(t, "capacity", "max_clients_within_sla") for t in res.transports}
sla = next((v for t in res.transports if (v := res.value(t, "capacity", "sla_ms"))), None)
display(Markdown(
    f"Subscribers of one channel held within the {sla:g} ms p95 SLA: "
    + ", ".join(f"{t} {text.num(v)}" for t, v in held.items() if v is not None) + "."
    if sla else "The capacity scenario is not in these results."))

# %% [markdown]
# ## Scale-out: a shared broker between instances

# %%
display(Markdown(comparison.backplane(res)))
