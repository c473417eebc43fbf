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
# # 02 · Latency and throughput (echo)
#
# Each connection sends the contract's `echo` on an open-loop schedule; the round trip is
# timed from the *intended* send time, so a stalled server shows up as a tail (no coordinated
# omission). Percentiles come from the HDR histograms in the raw files and are plotted only
# where at least ten samples lie beyond them. The answer first:

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, load, tables, text
from sobranie_bench.report.data import extremes, scenario_frame

res = load(RESULTS)
echo = scenario_frame(res, "echo", ["rtt_p50_us", "rtt_p90_us", "rtt_p99_us",
                                    "throughput_msgs_per_s", "offered_rate", "lost",
                                    "server_cpu_us_per_msg", "harness_cpu_us_per_msg"])
p50, p99 = extremes(res, "echo", "rtt_p50_us"), extremes(res, "echo", "rtt_p99_us")
cpu = extremes(res, "echo", "server_cpu_us_per_msg")
if p50 and p99 and cpu:
    (fast, f50), (slow, s50) = p50
    display(Markdown(
        f"At {f50.params} (run {f50.run_id}), **{fast}** answers fastest: median "
        f"{text.ms(f50.value)}, p99 {text.ms(res.value(fast, 'echo', 'rtt_p99_us', f50.params))}. "
        f"**{slow}** is slowest, median {text.ms(s50.value)} "
        f"({s50.value / f50.value:.1f}× {fast}, same run). Every one of them is far below a "
        "chat deadline of a few hundred milliseconds; what separates them is CPU: "
        f"{cpu[0][1].value:.0f} µs per echo ({cpu[0][0]}) to {cpu[1][1].value:.0f} µs "
        f"({cpu[1][0]}), i.e. {1e6 / cpu[0][1].value:,.0f} to {1e6 / cpu[1][1].value:,.0f} "
        "echoes per second per core."))
else:
    display(Markdown("The echo scenario is not in these results."))

# %%
charts.latency_percentiles(res)

# %%
tables.readable(echo.drop(columns=["run_id"]))

# %% [markdown]
# SSE and long-polling have no upstream channel: their echo goes up as an HTTP `POST /echo`
# and comes back on the stream or the next poll, which is part of what these round trips
# measure.

# %%
bound = echo.index[echo["client_bound"]].tolist() if not echo.empty else []
display(Markdown(
    f"Client-bound runs (the harness, not the server, was the limit): {', '.join(bound)}; "
    "their figures are bounds on the server." if bound else
    "No echo run was client-bound: the server, not the harness, set these figures."))
