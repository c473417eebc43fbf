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
# # 06 · Capacity: from one benchmarked instance to a million online users
#
# The capacity model (`sobranie_bench.capacity`) is calibrated from the same results: CPU per
# message, per delivery and per connection, memory per connection, bytes per message, and the
# measured latency curve. Figures the results do not hold are the model's fallback constants,
# marked as such. The SimPy instance model is checked against closed-form queueing results
# (M/M/1, M/M/c) before it is trusted. The answer first:

# %% tags=["parameters"]
RESULTS = "results"
ONLINE_USERS = 1_000_000
SCALING_USERS = (100_000, 1_000_000)
SIM_SECONDS = 600.0
VALIDATE_JOBS = 20_000

# %%
from dataclasses import asdict

import pandas as pd
from IPython.display import Markdown, display

from sobranie_bench.capacity import calibrate, scaling_table, validate
from sobranie_bench.report import charts, load, recommendation
from sobranie_bench.report.data import summary_frame

res = load(RESULTS)
costs = calibrate(summary_frame(res))
what_if, unplanned = recommendation.plan_each(costs, ONLINE_USERS, res.with_figures)
fleets = recommendation.fleet_frame(what_if)
if not fleets.empty:
    display(Markdown(
        f"At {ONLINE_USERS:,} online users, each transport carrying every feature alone, "
        f"**{fleets['instances'].idxmin()}** needs the fewest server processes "
        f"({fleets['instances'].min()}) and **{fleets['instances'].idxmax()}** the most "
        f"({fleets['instances'].max()}); what binds is "
        + ", ".join(sorted(set(fleets["bound by"]))) + "."))
display(Markdown("\n".join(f"- {n}" for n in unplanned)))

# %%
charts.capacity_curves(res, users=SCALING_USERS)

# %%
fleets.round(2)

# %% [markdown]
# ## Which figures are measured

# %%
calibration = recommendation.calibration_frame(costs)
calibration.pivot(index="transport", columns="figure", values="source")

# %% [markdown]
# ## A simulated hour, and how the models scale

# %%
scaling = scaling_table(SCALING_USERS, costs=costs, duration_s=SIM_SECONDS)
scaling

# %% [markdown]
# ## Validation against queueing theory

# %%
checks = validate(jobs=VALIDATE_JOBS)
validation = pd.DataFrame([asdict(r) for r in checks])
validation[["model", "utilisation", "simulated_mean_wait", "analytic_mean_wait",
            "relative_error", "analytic_in_ci"]].round(4)

# %%
inside = int(validation["analytic_in_ci"].sum())
display(Markdown(
    f"The closed-form mean wait falls inside the simulation's 95% interval in {inside} of "
    f"{len(validation)} cases (largest relative error "
    f"{validation['relative_error'].abs().max():.1%}, {VALIDATE_JOBS:,} jobs each)."))
