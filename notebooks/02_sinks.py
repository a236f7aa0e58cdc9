# %% [markdown]
# # Attention sinks (Gu et al. 2024; Yu et al. 2024) and the head atlas
#
# Most heads of a trained model put a large share of their attention on the first token,
# whatever it says: an *attention sink*, a place to park attention when the head has nothing to
# read. Two numbers describe it (docs/METRICS.md#attention-sinks):
#
# - `alpha_0`, the mean attention a head's queries put on the first token; the **sink rate** is
#   the share of (text, layer, head) with `alpha_0 > 0.3` (Gu et al.);
# - **hidden sinks**: later tokens that also receive more than 0.1 of a head's attention, often
#   stopwords and punctuation (Yu et al.).
#
# Small sizes here (2 texts of 128 tokens); the command's defaults are 32 texts of 256 tokens.

# %%
import interp
from interp.analyses.sinks import SinkConfig
from interp.experiments import sinks

lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct
config = SinkConfig(length=128, max_texts=2)  # raise length and max_texts for real numbers
result = sinks.run(lm, config)  # sinks.run(lm, config, Store("runs/sinks")) keeps tables and resumes
print(f"sink rate at position 0: {result.sink_rate:.1f}% of (text, layer, head)")
result.to_dataframe().head()

# %% [markdown]
# Most (text, layer, head) triples are sinks here; the rate depends on the texts and their
# length (on 32 texts of 256 tokens the embedded model gives 56%, docs/RESULTS.md). A sink is not
# a bug in one head: it is how the softmax, which must sum to 1, says "nothing to read here".
# The value-weighted columns (`weighted_first_token_mass`, `value_ratio`, `noop_rate_pct`) ask
# whether that attention also writes anything: a sink whose value vector is small is a no-op
# (docs/METRICS.md#value-weighted-sinks). The rate per layer shows where the sinks are:

# %%
result.layer_sink_rates().head(12)

# %%
from interp.plots.sinks import first_token_mass_grid, layer_sink_rates

layer_sink_rates(result)

# %% [markdown]
# **Reading the per-layer rates.** Layers 0-2, and on this model layers 10-11, have no sinks:
# their heads mix content. Elsewhere most heads sink; how many depends on the length (at these
# 128 tokens layers 3-9 sink almost everywhere, on 256-token texts docs/RESULTS.md finds 13-25%
# there and 61-100% from layer 12 on). A layer where nearly every head sinks changes the
# residual stream little through attention.
#
# The grid shows the mean first-token mass of each head:

# %%
first_token_mass_grid(result)

# %% [markdown]
# **Hidden sinks by token type.** `enrichment` compares a type's share of the hidden-sink hits
# with its share of the tokens: above 1 means that kind of token attracts attention beyond its
# frequency. Stopwords and the lone space token are the usual hidden sinks. With 2 short texts
# the counts are small: treat the ratios as a direction, not a measurement.

# %%
result.token_type_table()

# %% [markdown]
# ## The head atlas
#
# The atlas profiles every head against query position: first-token and sink mass, entropy,
# distance, and the mass on recent and on distant keys (docs/METRICS.md#head-atlas). It gives each
# head a kind (sink, previous-token, local, global) and a KV-cache policy: heads whose distant
# mass stays under 0.05 keep only 4 sink tokens and a recent window. `interp atlas` also checks
# that policy causally (loss change with the heads windowed) and writes an interactive page.
# Here one 512-token text, no causal check.

# %%
from interp.analyses.atlas import AtlasConfig
from interp.experiments import atlas

atlas_result = atlas.run(lm, AtlasConfig(length=512, windows=(32, 128), max_texts=1, causal_texts=0))
kinds = atlas_result.summary()["kinds"]
print(kinds, "KV cache saved:", round(atlas_result.policy()["kv_saved"], 3))
atlas_result.to_dataframe()[["layer", "head", "sink", "prev", "distant_128", "concentration", "kind"]].head(10)

# %% [markdown]
# **Reading the atlas.** Sink heads spend at least half their attention on the first token;
# previous-token heads at least half on the token just before; local heads almost nothing
# beyond 128 tokens back; global heads read across the whole context. The KV saving is modest
# on this model because of grouped-query attention: a kv head shrinks only when all three query
# heads reading it may be windowed. At 512 tokens a 128-token window is a quarter of the text,
# so more heads look local than they would at 8k; docs/RESULTS.md has the 1k and 8k runs.
#
# **Next:** notebook 03, *Circuit patching* (`notebooks/03_patching.py`): which heads carry a
# task's answer, found by moving activations between a clean and a corrupted prompt.
