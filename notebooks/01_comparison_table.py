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
# # 01 · The note's comparison table, against our measurements
#
# The design note rates WebSockets, Socket.IO, WebTransport, SSE and WebRTC from one to five
# stars. Here its stars stand beside ours: measured (performance, scalability), counted from
# our adapters' code (complexity) or cited (browser and Elysia support). The answer first:

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, comparison, load, tables

res = load(RESULTS)
rows = comparison.rows(res)
meta = res.metadata()
compared, close, apart = comparison.agreement(rows)
far = comparison.disagreements(rows)
display(Markdown(
    (f"Of **{compared}** cells rated by both the note and us, **{close}** agree within one "
     f"star and **{apart}** are two or more stars apart"
     + (": " + "; ".join(f"{tech} {col} (note {note}★, ours {ours}★)"
                         for tech, col, note, ours, _basis in far) if far else "")
     + f". Run {res.main_run}, {meta.get('profile')} profile, {meta.get('cores')} cores.")
    if res.main_run else "No results found: every measured cell says *not measured*."))

# %%
charts.latency_percentiles(res)

# %% [markdown]
# ## Stars: the note's and ours

# %%
comparison.star_frame(res)

# %% [markdown]
# ## The rules behind our stars

# %%
display(Markdown("\n".join([
    f"- **Performance**: {comparison.PERFORMANCE_RULE}.",
    f"- **Scalability**: {comparison.SCALABILITY_RULE}.",
    f"- **Complexity**: {comparison.COMPLEXITY_RULE}.",
    f"- **Browser support** (cited): {comparison.BROWSER_RULE}.",
    f"- **Elysia support** (cited): {comparison.FRAMEWORK_RULE}.",
])))

# %% [markdown]
# ## The measured values behind them

# %%
comparison.measured_frame(res)

# %% [markdown]
# ## Scale-out

# %%
display(Markdown(comparison.backplane(res)))
