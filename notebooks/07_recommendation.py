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
# # 07 · Which transport for which feature
#
# Each feature has a service level (a p99 deadline judged on the 4g profile, loopback standing
# in when no 4g run exists) and a budget. Transports that meet both are ranked by what the
# whole application costs at one million online users (capacity model calibrated on this run,
# priced per host-hour and egress GB), near ties going to browser reach, then simplicity.
# The answer, computed below from the run:

# %% tags=["parameters"]
RESULTS = "results"
ONLINE_USERS = 1_000_000

# %%
import pandas as pd
from IPython.display import Markdown, display

from sobranie_bench.report import charts, load, recommendation

res = load(RESULTS)
choices = recommendation.choice_frame(res)
stacks = recommendation.stacks_frame(res)
picked = choices[choices["Transport"] != "—"]
display(Markdown(
    "\n".join(f"- **{feature}**: {row['Transport']} ({row['SLA']}; measured p99 "
              f"{row['p99 (ms)']} ms), fallback {row['Fallback']}"
              for feature, row in picked.iterrows() if pd.notna(row["p99 (ms)"]))
    + ("\n\n" + "; ".join(f"{name}: **${row['Cost / month (USD)']:,.0f}/month**, "
                          f"{int(row['Processes'])} processes"
                          for name, row in stacks.iterrows()) + "." if len(stacks) else "")))

# %%
charts.sla_headroom(res)

# %%
choices

# %% [markdown]
# ## One connection per user, or two
#
# The note proposes WebSocket and SSE side by side: every user then holds two connections, and
# the application runs two fleets.

# %%
stacks

# %% [markdown]
# ## Every option for one feature: notifications

# %%
recommendation.options_frame(res, "notifications")

# %% [markdown]
# ## What would flip each choice

# %%
display(Markdown("\n".join(
    f"**{c.feature.title}**\n\n" + "\n".join(f"- {s}" for s in recommendation.flips(c)) + "\n"
    for c in recommendation.choices(res).values() if c.ranking)))

# %% [markdown]
# ## Fleets at one million online: our mapping against the note's stack

# %%
cap = recommendation.capacity(res, recommendation.choices(res), ONLINE_USERS)
ours = recommendation.fleet_frame(cap.ours).round(2) if cap.ours is not None else None
ours

# %%
note = recommendation.fleet_frame(cap.note).round(2) if cap.note is not None else None
note

# %%
display(Markdown("\n".join(f"- {n}" for n in cap.notes)))

# %% [markdown]
# ## Error bars and the model against measurement
#
# Process counts with their error bars: the fitted costs' bootstrap over trials (`make
# calibrate`) carried by Monte Carlo into the count, "N ± k" with k the larger distance to the
# 5th or 95th percentile; a plan beyond the measured range says extrapolation. Below, the
# held-out validation: the calibrated model's predictions of points it was not fitted to,
# against their measurement.

# %%
from pathlib import Path

import pandas as pd

from sobranie_bench.capacity.errors import processes_text
from sobranie_bench.capacity.tables import VALIDATION_HEADERS, calibration_tables

plans = {"ours": cap.ours, "the note's stack": cap.note}
pd.DataFrame.from_records(
    [{"plan": name, "transport": f.transport, "processes": processes_text(f),
      "bound by": f.binding} for name, p in plans.items() if p is not None for f in p.fleets])

# %%
shown = calibration_tables(Path(RESULTS) / "calibrate")
if shown is None:
    display(Markdown("No calibration under `calibrate/`: run `make calibrate`."))
else:
    display(Markdown(f"Host during the calibration: {shown.host}. Verdicts: " + "; ".join(
        f"{t} {'PASS' if ok else 'FAIL'}" for t, ok in shown.verdicts.items()) + "."))
    display(pd.DataFrame(shown.validation, columns=list(VALIDATION_HEADERS)))

# %% [markdown]
# The fleet model against the newest cluster run (`run --cluster N --broker redis`): the broker's
# CPU per message, other-instance latency, who an instance loss cuts off and how long until
# every one of them is back (the storm model, with and without reconnect jitter), predicted for
# the same N and load beside the measurement.

# %%
from sobranie_bench.capacity.clustercheck import latest_cluster_run
from sobranie_bench.capacity.tables import cluster_rows

cluster_run = latest_cluster_run(Path(RESULTS) / "runs")
rows = cluster_rows(cluster_run, Path(RESULTS) / "summary.csv")
if not rows or cluster_run is None:
    display(Markdown("No cluster run under `runs/`: `sobranie-bench run --cluster 3 --broker "
                     "redis --scenarios fanout,failover,backplane`."))
else:
    display(Markdown(f"Cluster run `{cluster_run.name}`."))
    display(pd.DataFrame(rows, columns=list(VALIDATION_HEADERS)))
