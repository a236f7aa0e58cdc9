# %% [markdown]
# # Circuit patching: indirect-object identification (Wang et al. 2022)
#
# *"When Mary and John went to the store, John gave a drink to"* -> " Mary". The **clean**
# prompt has the answer; the **corrupted** prompt replaces the names so that it does not. The
# metric is the logit difference (LD) between the right and the wrong name at the last position.
# Activation patching copies one head's clean output into the corrupted run and measures how
# much of the clean LD comes back:
#
# `normalised = (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)`: 1 = the head alone
# restores the answer, 0 = it does nothing, negative = it pushes against the answer
# (docs/METRICS.md#circuit-patching).
#
# Small sizes here: 2 prompts, the head outputs of three late layers (27 patches). For real
# numbers raise `n` (8-16) and patch every layer (`layers=None`).

# %%
import interp
from interp.analyses.patching import PatchConfig
from interp.experiments.patching import run

lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct
config = PatchConfig(task="ioi", n=2, layers=(22, 23, 24))  # head_out by head, activation patching
result = run(lm, config)
b = result.baseline
print(f"clean accuracy {b.clean_accuracy:.2f}, LD clean {b.clean_logit_diff:.2f}, corrupt {b.corrupt_logit_diff:.2f}")
result.top(5)

# %% [markdown]
# **Read the baseline first.** The model answers every clean prompt (accuracy 1.0) with a
# logit difference of about 4, and the corruption removes most of it: the task is done, and
# there is something to restore. Without that, no score below would mean anything; the result's
# checks say so when it fails.
#
# **The heads.** A few heads of layer 23 restore a large share of the answer on their own
# (normalised around 0.5 to 0.7): they write the indirect object's name into the last position,
# like the *name mover* heads of GPT-2 small. Layer 24 has a strongly negative head: patching it
# in makes the answer *worse*, a *negative name mover* that hedges the prediction. With 2 prompts
# these are rough numbers; docs/RESULTS.md gives the same top heads at n = 8.
#
# `result.to_grid()` is the `[layer, head]` array of scores (NaN where a layer was not patched),
# the shape TransformerLens returns; the figure draws it.

# %%
import numpy as np

grid = result.to_grid()  # [layer, head]
patched = [layer for layer in range(grid.shape[0]) if np.isfinite(grid[layer]).any()]
strongest = tuple(int(i) for i in np.unravel_index(np.nanargmax(np.abs(grid)), grid.shape))
print(f"grid {grid.shape}, layers patched {patched}, strongest (layer, head) {strongest}")

# %%
from interp.plots.patching import patch_figure

patch_figure(result)

# %% [markdown]
# ## Where the answer is written: the residual stream by position
# *Attribution patching* (Nanda 2023) estimates every patch at once from one forward and one
# backward pass: the first-order change of the metric. Here it covers the residual stream
# entering every layer at every position: where does the information that decides the answer
# sit, layer by layer?

# %%
resid = run(lm, PatchConfig(task="ioi", n=2, target="resid_pre", by_pos=True, method="attribution"))
patch_figure(resid)

# %% [markdown]
# **Reading the map.** Up to the low twenties the strongest cells sit at the name tokens (the
# second name `N2` and the repeated subject `S2`): that is where the information that decides
# the answer is held. From about layer 23-24 it sits at the last position, where the prediction
# is made: the layers of the heads above, which move it there. Attribution is a linear
# estimate: cheap, and close to activation patching for small changes, but it can overshoot
# (values above 1) or miss saturated effects; check what it finds with activation patching
# (`PatchConfig(method="attribution", compare=True)` reports both and their correlation).
#
# Your own prompt pairs: `interp patch pairs FILE.jsonl` or
# `interp.datasets.tasks.task_from_prompts` and the same runner.
#
# **Next:** notebook 04, *Preplan and anchor tokens* (`notebooks/04_preplan.py`): what attention
# says about the model's plan while it writes an answer.
