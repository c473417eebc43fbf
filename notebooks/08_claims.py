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
# # 08 · The note's claims, checked
#
# Every pro and con of the design note, each cell of its table, its code examples and its
# proposed stack get a verdict: confirmed, refuted, depends, or not measured yet. Verdicts
# about measurable things are computed from the results (within one run); the rest rest on a
# test of this suite or a cited public source. `results/claims.md` holds the evidence.

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, claims, load

res = load(RESULTS)
table = claims.frame(res)
counts = table["verdict"].value_counts()
counts

# %%
display(Markdown(
    f"Of {len(table)} claims, " + ", ".join(f"**{n}** {v}" for v, n in counts.items()) + "."))

# %%
by_topic = table.groupby(["topic", "verdict"]).size().unstack(fill_value=0)
charts.verdicts({t: {v: int(n) for v, n in row.items() if n} for t, row in by_topic.iterrows()})

# %%
by_topic

# %% [markdown]
# ## Refuted

# %%
refuted = table[table["verdict"] == claims.REFUTED]
refuted[["topic", "claim"]]

# %% [markdown]
# ## Waiting for measurements

# %%
waiting = table[table["verdict"] == claims.NOT_MEASURED]
display(Markdown(
    "\n".join(f"- {row.topic}: {row.claim}" for row in waiting.itertuples())
    or "Every measurable claim has its measurement."))
