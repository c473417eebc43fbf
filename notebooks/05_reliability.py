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
# # 05 · Reliability: churn, loss, resume and reconnect storms
#
# The churn scenario connects and disconnects clients while messages flow to steady
# subscribers: delivery latency, loss, duplicates and the churners' connect time. Resume after
# a drop is checked by the contract tests; everyone reconnecting at once is a question for
# the capacity model's storm simulation, driven by the measured handshake rate. The answer:

# %% tags=["parameters"]
RESULTS = "results"
STORM_CLIENTS = 100_000
STORM_INSTANCES = 10

# %%
from IPython.display import Markdown, display

from sobranie_bench.capacity import storm
from sobranie_bench.capacity.storm import STRATEGIES
from sobranie_bench.report import charts, claims, load, tables
from sobranie_bench.report.data import scenario_frame

res = load(RESULTS)
churn = scenario_frame(res, "churn", ["latency_p50_us", "latency_p99_us", "published",
                                      "delivered", "lost", "duplicated", "churned",
                                      "churn_failures", "connect_p50_us"])
rate, rate_line = claims.connect_rate(res)
storms = [storm(STORM_CLIENTS, instances=STORM_INSTANCES, strategy=s,
                **({"connect_capacity_per_s": rate} if rate else {})) for s in STRATEGIES]
by = {s.strategy: s for s in storms}
if not churn.empty:
    clean = churn.index[(churn["lost"].fillna(1) == 0) & (churn["duplicated"].fillna(1) == 0)]
    display(Markdown(
        f"Under churn, {len(clean)} of {len(churn)} transports delivered every acknowledged "
        f"message exactly once. When {STORM_CLIENTS:,} clients lose their instance together, "
        f"reconnecting without jitter peaks at {by['none'].peak_attempts_per_s:,.0f} attempts/s "
        f"against {by['full_jitter'].peak_attempts_per_s:,.0f} with full jitter "
        f"({rate_line})."))
else:
    display(Markdown("The churn scenario is not in these results."))

# %%
charts.storm_curves(storms)

# %%
tables.readable(churn.drop(columns=["run_id"]))

# %% [markdown]
# ## Resume after a drop: the tests that hold it

# %%
resume = sorted(t for t in claims.cited_tests() if "resume" in t)
display(Markdown("\n".join(f"- `{t}`" for t in resume)))

# %% [markdown]
# ## Reconnect strategies (capacity model)

# %%
display(Markdown("\n".join(
    f"- **{name}**: peak {r.peak_over_capacity:.2f}× an instance's handshake capacity, "
    + (f"99% reconnected after {r.time_to_recover_s:g} s" if r.time_to_recover_s is not None
       else "not recovered within the simulation")
    + f", {r.wasted_share:.0%} of handshake work wasted"
    for name, r in by.items())))
