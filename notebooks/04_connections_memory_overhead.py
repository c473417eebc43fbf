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
# # 04 · Connections, memory and bytes on the wire
#
# The connections scenario ramps to N idle connections and holds them: connect time (to the
# server's `hello`), failures, server memory per connection (the slope of RSS against open
# connections) and keep-alive CPU. The overhead scenario counts bytes at the socket, both
# directions, handshakes and framing included. The answer first:

# %% tags=["parameters"]
RESULTS = "results"

# %%
from IPython.display import Markdown, display

from sobranie_bench.report import charts, comparison, load, tables, text
from sobranie_bench.report.data import extremes, scenario_frame

res = load(RESULTS)
conns = scenario_frame(res, "connections", ["connected", "failures", "connect_p50_us",
                                            "connect_p99_us", "server_rss_bytes_per_conn",
                                            "server_cpu_us_per_conn", "keepalive_cpu_percent"])
mem = extremes(res, "connections", "server_rss_bytes_per_conn")
if mem:
    (small, fs), (large, fl) = mem
    display(Markdown(
        f"Memory per idle connection runs from {text.nbytes(fs.value)} (**{small}**) to "
        f"{text.nbytes(fl.value)} (**{large}**): a million idle connections hold "
        f"{text.nbytes(fs.value * 1e6)} to {text.nbytes(fl.value * 1e6)} of server memory "
        "before any message flows. Bytes per small message differ by the protocol's framing "
        "and, for polling, per-request HTTP headers (below)."))
else:
    display(Markdown("The connections scenario is not in these results."))

# %%
charts.memory_per_connection(res)

# %%
tables.readable(conns.drop(columns=["run_id"]))

# %% [markdown]
# ## Bytes per message

# %%
charts.bytes_per_message(res)

# %%
tables.readable(scenario_frame(res, "overhead", ["bytes_down_per_msg", "bytes_up_per_msg",
                                                 "bytes_per_msg"],
                               params=res.reference_params("overhead")).drop(columns=["run_id"]))

# %% [markdown]
# ## Measured against the specifications
#
# What each delivered message costs downstream beyond its payload (the contract's JSON
# envelope, the protocol's framing and the amortised handshake), beside the least the
# protocol's specification adds.

# %%
framing = comparison.framing_frame(res)
framing
