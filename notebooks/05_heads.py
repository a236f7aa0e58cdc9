# %% [markdown]
# # Head detectors and head scores
#
# Four ways to name what a head does, each computed from the kernel's statistics (no attention
# matrix is built):
#
# 1. the classic **previous-token, duplicate-token and induction** detectors;
# 2. **select-and-copy** heads on multiple-choice questions (Tulchinskii et al. 2024);
# 3. **query-focused retrieval heads**, QRHead (Zhang et al. 2025);
# 4. **AttentionInfluence**: how much the loss on a text rises when chosen heads are made uniform.
#
# Small sizes throughout; each cell's comment says what to raise.

# %%
import interp

lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct

# %% [markdown]
# ## Previous-token, duplicate-token and induction heads
# Random tokens said twice. For each query the detector knows the *expected* key: the previous
# position (previous-token), the earlier copy of the same token (duplicate-token), or the token
# *after* the earlier copy (induction). A head's score is its mean attention on the expected
# keys, over the query rows that have one (docs/METRICS.md#head-detectors).

# %%
from interp.analyses.heads import HeadConfig
from interp.experiments import heads as head_detectors
from interp.plots.heads import detector_figure

heads = head_detectors.run(lm, HeadConfig(n_seqs=4, length=32))  # raise n_seqs / length for tighter scores
top = {kind: heads.top(kind, 3) for kind in heads.kinds}
for kind, best in top.items():
    print(f"{kind}: " + ", ".join(f"L{layer}H{head} {score:.2f}" for layer, head, score in best))
detector_figure(heads)

# %% [markdown]
# **Reading the scores.** A score near 0.9 means the head puts nearly all of its attention on
# the expected key: an unambiguous induction or previous-token head. Random tokens are the
# cleanest probe, since only the repetition can be predicted; on natural text the same heads
# lead with lower scores (docs/RESULTS.md). The induction heads of this model sit in layers 17
# and 18, the same heads that score highest as retrieval heads (notebook 01): retrieval is
# induction over a long context.
#
# These scores are not TransformerLens's `detect_head` numbers: TransformerLens divides by
# every query row, also those with no expected key. Notebook 06 compares the two.
#
# ## Select-and-copy heads
# On a multiple-choice question with one option per line, a select-and-copy head's final query
# attends most to the end of the right option's line. Per head: how often the QK-score picks the
# right answer.

# %%
from interp.analyses.select_copy import SelectCopyConfig
from interp.experiments import select_copy
from interp.plots.heads import select_copy_figure

sc = select_copy.run(lm, SelectCopyConfig(max_questions=6))  # None = all 60 shipped questions
print(sc.summary(3))
select_copy_figure(sc)

# %% [markdown]
# **Caveat: chance.** With 4 options chance is 0.25, but the *best* of 270 heads guessing at
# random does much better than 0.25 on a handful of questions: `chance_best` in the summary is
# that bar. A head must clear it, not 0.25, before it counts. On 6 questions none can be told
# apart from luck, and the result's check says so: "not tested", too few questions to decide.
# `model_accuracy` is the model's own answer, no better than chance here. On all 60 questions
# docs/RESULTS.md finds no such head either: this 135M model has none that stand out.
#
# ## Query-focused retrieval heads (QRHead)
# Several documents and a question; the score is the question's attention mass on the document
# that answers it, minus the same mass for a null question ("N/A"), so a head that simply
# favours one position scores 0.

# %%
from interp.analyses.qr_heads import QRConfig
from interp.experiments import qr_heads
from interp.plots.heads import qr_heads_figure

qr = qr_heads.run(lm, QRConfig(max_samples=3))  # None = the 16 shipped samples
qr.to_dataframe().sort_values("qr_score", ascending=False).head()

# %% [markdown]
# The top QR heads overlap the induction and retrieval heads of layers 17-18: reading the right
# document and copying from it are done by the same few heads. `accuracy` is how often the head
# alone picks the gold document; with 3 samples it moves in steps of 1/3, and its interval
# (`accuracy_ci_low`, `accuracy_ci_high`) is wide.

# %%
qr_heads_figure(qr)

# %% [markdown]
# ## AttentionInfluence
# Make chosen heads uniform (every visible key gets equal attention) and measure the relative
# rise of each text's loss: `AI = (L_masked - L_base) / L_base`. Here the heads are the top
# induction heads found above, and the texts a repeated sentence and a list of digits.

# %%
from interp.analyses.influence import InfluenceConfig
from interp.experiments import influence
from interp.plots.heads import influence_figure

texts = (
    "The cat sat on the mat. The cat sat on the mat. The cat sat on the",
    "Numbers: 3, 14, 15, 92, 65, 35, 89, 79",
)
induction = tuple((layer, head) for layer, head, _ in heads.top("induction", 4))
ai = influence.run(lm, InfluenceConfig(heads=induction, texts=texts))
ai.to_dataframe()

# %% [markdown]
# **Reading AI.** A positive AI means the text needs those heads: its loss rises without them.
# Here both values are small (about 1%): four heads of 270 matter little to these short texts,
# and the sign and size depend on the text: a repeated sentence is exactly what induction heads
# predict, yet other heads can take over when a few are removed, so do not read one text's AI as
# a property of the heads. AttentionInfluence ranks *texts* (for data selection), not heads.

# %%
influence_figure(ai)

# %% [markdown]
# **Next:** notebook 06, *Coming from TransformerLens* (`notebooks/06_from_transformerlens.py`):
# the same moves as in TransformerLens (a cache, hook names, patterns, patching sweeps), side by
# side with it on the same model.
