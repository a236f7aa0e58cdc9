# %% [markdown]
# # Retrieval heads (Wu et al. 2024)
#
# A *retrieval head* copies a fact out of a long context: when the model writes an answer
# token, the head's strongest attention lands on that same token inside the needle. Wu et al.
# found that fewer than 5% of heads do this, and that masking them breaks long-context recall
# while masking as many random heads does not.
#
# **How it is scored.** A needle sentence is hidden at a chosen depth of a haystack; the prompt
# asks a question whose answer is in the needle. At each answer token, a head has a *copy event*
# when its top-attended key is inside the needle's answer span and holds the token being
# written. A head's score is its events per answer token, averaged over the samples the model
# answers correctly; a head scoring above 0.1 is a retrieval head (docs/METRICS.md#retrieval-heads).
#
# The sizes here are tiny (3 needles, one length of 192 tokens, one depth) so the notebook runs
# in about a minute on a CPU. For real numbers, raise `lengths` and `depths` and keep
# `mask=True` (the causal check).

# %%
import interp
from interp.analyses.checks import as_records
from interp.experiments import Store
from interp.experiments.retrieval import RetrievalConfig, run

lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct
config = RetrievalConfig(lengths=(192,), depths=(0.5,), mask=False)  # 3 needles x 1 length x 1 depth
result = run(lm, config, Store())  # Store("runs/retrieval") keeps the tables and resumes
print(f"{result.share:.1%} of heads score > {config.threshold} over {result.n_samples} counted samples")
result.to_dataframe().sort_values("rank").query("rank > 0").head(10)

# %% [markdown]
# **Reading the table.** `score` is the share of answer tokens the head copied (1.0: every one
# of them, in every counted sample); `n_samples` is how many samples counted (the model's answer
# recalled the needle). The strongest heads sit in the upper-middle layers (around 17 to 24 of
# 30), as Wu et al. report for larger models, and they are few: a few percent of the 270 heads.
#
# **Caveats.** Three samples of one length and depth give a coarse score; a head that scores
# 1.0 here may not hold at other depths or lengths. Whether the finding can be trusted is
# written down by the result itself, its *checks* (docs/METRICS.md#checks-can-i-trust-this-finding):

# %%
import pandas as pd

pd.DataFrame(as_records(result.checks))[["name", "value", "threshold", "passed"]]

# %% [markdown]
# With `mask=False` the causal check (masking the top heads must hurt recall more than masking
# random heads) was not run, so the finding rests on attention alone. The heat map shows every
# head's score; hover for the layer and head.

# %%
from interp.plots.retrieval import figure

figure(result)

# %% [markdown]
# ## What the top head does
# On a sentence said twice, a copying head looks, from each token of the second copy, at the
# token that followed it in the first copy: a stripe parallel to the diagonal. Retrieval is this
# induction-like copying, done across a long haystack.

# %%
from interp.hooks import capture
from interp.plots import attention_view, pattern_kwargs

layer, head, score = result.top(1)[0]
ids = lm.encode("The violet lighthouse keeper counted forty-seven copper gulls at dawn. " * 2)
with capture(lm, layers=[layer], keep=("q", "k")) as cap:
    lm.forward(ids)
print(f"top retrieval head: layer {layer} head {head}, score {score:.2f}")
attention_view(
    cap["q", layer][0, head],
    cap["k", layer][0, lm.arch.kv_map[head]],
    lm.token_strings(ids[0]),
    **pattern_kwargs(lm.attention_kwargs(layer), head),
    layer=layer,
    head=head,
)

# %% [markdown]
# On the command line the same analysis, with the causal check and resumable output, is
# `interp score retrieval --lengths 512,1024 --out runs/retrieval`.
#
# **Next:** notebook 02, *Attention sinks and the head atlas* (`notebooks/02_sinks.py`): where
# the attention that does not retrieve anything goes.
