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
# stars on browser support, complexity, performance, scalability and Elysia support. Here its
# stars stand beside stars derived from our runs (performance, scalability), from the code of
# our reference adapters (complexity), and from cited public sources (browser and Elysia
# support, which a benchmark cannot measure). Long-polling, which the note does not rate, is
# added as the baseline.

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, comparison, load

res = load(RESULTS)
rows = comparison.rows(res)
meta = res.metadata()
display(Markdown(
    f"Results: run **{res.main_run}** ({meta.get('profile')} profile, {meta.get('cores')} "
    f"cores, Python {meta.get('python')}); transports measured: "
    f"{', '.join(res.transports) or 'none'}."
    if res.main_run else "No results found: every measured cell says *not measured*."))

# %% [markdown]
# The performance column at a glance: echo round-trip percentiles per transport, this run.

# %%
charts.latency_percentiles(res)

# %% [markdown]
# ## Stars: the note's and ours

# %%
comparison.star_frame(res)

# %%
compared, close, apart = comparison.agreement(rows)
far = comparison.disagreements(rows)
display(Markdown(
    f"Of **{compared}** cells rated by both, **{close}** agree within one star and "
    f"**{apart}** are two or more stars apart"
    + (":\n\n" + "\n".join(f"- {tech}, {col}: note {note}★, ours {ours}★ ({basis})"
                           for tech, col, note, ours, basis in far) if far else ".")))

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
