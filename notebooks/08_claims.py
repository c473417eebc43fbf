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
# Every claim of the design note names a rule (`sobranie_bench/report/claims.py`): a metric,
# a comparator and a threshold with its reason; or the tests it rests on; or the source it
# cites. Verdicts are computed from this run and the recorded test run. The answer:

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, claims, load

res = load(RESULTS)
table = claims.frame(res)
kinds = table["rests on"].value_counts()
display(Markdown(
    f"Of {len(table)} claims, " + ", ".join(f"**{n}** {k}" for k, n in kinds.items())
    + f". Refuted by this run or its tests: **{(table['verdict'] == claims.REFUTED).sum()}**."))

# %%
by_topic = table.groupby(["topic", "rests on"]).size().unstack(fill_value=0)
charts.verdicts({t: {v: int(n) for v, n in row.items() if n} for t, row in by_topic.iterrows()})

# %%
by_topic

# %% [markdown]
# ## Refuted

# %%
refuted = table[table["verdict"] == claims.REFUTED]
refuted[["topic", "claim", "basis", "judged on"]]

# %% [markdown]
# ## Waiting for a measurement or a test run

# %%
waiting = table[table["verdict"].isin([claims.NOT_MEASURED, claims.NOT_TESTED, claims.FAILED])]
display(Markdown(
    "\n".join(f"- {row.topic}: {row.claim} ({row.verdict})" for row in waiting.itertuples())
    or "Every measurable claim has its measurement, every tested claim its passing test."))
