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
# Each Sobranie feature weighs seven criteria differently: latency, server CPU, memory per
# connection, bytes on the wire (measured), browser support (cited), complexity (counted) and
# bidirectionality. A measured criterion scores best / value among the transports of the main
# run; the weighted mean ranks them. The fallback is the best transport that needs only plain
# HTTP request/response. What the choice costs at scale comes from the capacity model.

# %% tags=["parameters"]
RESULTS = "results"
ONLINE_USERS = 1_000_000

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, load, recommendation

res = load(RESULTS)
choices = recommendation.choice_frame(res)
choices

# %%
charts.capacity_curves(res)

# %%
ranked = choices.dropna(subset=["score"])
display(Markdown("\n".join(
    f"- **{feature}**: {row['winner']}"
    + (f" (score {row['score']:.2f} against {row['runner-up']}'s "
       f"{row['runner-up score']:.2f})" if row["runner-up"] else "")
    + (f", fallback {row['fallback']}" if row["fallback"] else "")
    for feature, row in ranked.iterrows())
    or "No transport could be ranked: the results hold too little."))

# %% [markdown]
# ## The scores behind one choice: chat

# %%
recommendation.ranking_frame(res, "chat")

# %% [markdown]
# ## When the weights move

# %%
sensitivity = recommendation.sensitivity_frame(res)
sensitivity

# %%
moved = [f for f, row in sensitivity.iterrows() if row.nunique(dropna=False) > 1]
display(Markdown(
    f"The winner changes with the weighting for {len(moved)} of {len(sensitivity)} features"
    + (f": {', '.join(moved)}." if moved else "; the choice is robust to these weightings.")))

# %% [markdown]
# ## The cost at scale: our mapping against the note's stack

# %%
cap = recommendation.capacity(res, recommendation.choices(res), ONLINE_USERS)
ours = recommendation.fleet_frame(cap.ours) if cap.ours is not None else None
ours

# %%
note = recommendation.fleet_frame(cap.note) if cap.note is not None else None
note

# %%
if ours is not None and note is not None:
    display(Markdown(
        f"At {ONLINE_USERS:,} online users our mapping needs **{ours['instances'].sum()}** "
        f"instances, the note's WebSockets + SSE stack **{note['instances'].sum()}** (every "
        "user holds one connection per transport in use, so two transports mean two "
        "connections each)."))
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
