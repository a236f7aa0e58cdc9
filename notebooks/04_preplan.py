# %% [markdown]
# # Preplan and anchor tokens (Li et al. 2025)
#
# While a model writes a step-by-step answer, its attention has a rhythm (Li et al. 2025,
# docs/METRICS.md#preplan-and-anchor-tokens):
#
# - **local heads** (the 30% with the shortest attention span) look a few tokens back; where
#   their windowed attention distance (**WAAD**) jumps, the model is starting a new step: a
#   *preplan* token;
# - **global heads** (the 30% with the longest span) keep returning to a few earlier tokens;
#   the attention a token receives from 10 to 100 tokens later (**FAI**) marks these *anchors*.
#
# The model answers a shipped arithmetic prompt greedily; the statistics come from the kernel
# (no attention matrix). 32 new tokens here; raise `max_new_tokens` for a longer answer.

# %%
import interp
from interp.analyses.preplan import PreplanConfig
from interp.datasets.prompts import default_prompts
from interp.experiments import preplan

lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct
config = PreplanConfig(prompts=default_prompts()[:1], max_new_tokens=32)  # raise for a longer answer
run = preplan.run(lm, config)  # preplan.run(lm, config, Store("runs/preplan")) keeps tables and resumes
result = run.results[0]  # one PreplanResult per prompt
print(result.response)
result.summary()

# %% [markdown]
# **Reading the summary.** The 135M model's arithmetic is not right (it sets out to divide);
# the rhythm below is about how it attends while writing, not about whether the answer is
# correct. `local_heads` and `global_heads` are the heads the two scores average over (short
# spans in layer 10, long ones in layers 15-20). `n_preplan` and `n_anchor` count the tokens of
# each kind; each is a top share of its score (40% by default), so the counts say more about the
# threshold than about the model. What carries information is *which* tokens they are, and
# whether an anchor is *locally dominated*: its WAAD is low and a preplan token sits just before
# it, the coupling Li et al. use to credit tokens during training.
#
# The per-token table has every score:

# %%
result.to_dataframe().head(12)

# %% [markdown]
# Highlighted response (orange: preplan, blue: anchor, purple: both; a red outline marks a
# locally dominated anchor):

# %%
from IPython.display import HTML

from interp.plots.preplan import fai_figure, highlighted_text_html, span_figure, waad_figure

css = (
    "<style>.preplan{background:#f4a261}.anchor{background:#8ecae6}.both{background:#c77dff}"
    ".dom{box-shadow:0 0 0 2px #d00000}.resp{white-space:pre-wrap;font-family:monospace}</style>"
)
HTML(css + highlighted_text_html(result))

# %% [markdown]
# **WAAD over the response.** Spikes are the preplan tokens: the local heads briefly look
# further back, usually at the start of a new clause or calculation step.

# %%
waad_figure(result)

# %% [markdown]
# **FAI over the response.** Peaks are anchors: numbers and sentence ends that later tokens
# keep reading. With 32 tokens, only the first tokens have 10 to 100 later tokens to receive
# attention from, so the last tokens' FAI is small by construction: a caveat that shrinks with
# a longer response.

# %%
fai_figure(result)

# %% [markdown]
# **Head spans**, the mean attention distance of every head in the analysed layers, with the
# local and global heads marked: the split the two scores above are built on.

# %%
span_figure(result)

# %% [markdown]
# **Next:** notebook 05, *Head detectors and head scores* (`notebooks/05_heads.py`): classic
# previous-token, duplicate-token and induction heads, and three newer head scores.
