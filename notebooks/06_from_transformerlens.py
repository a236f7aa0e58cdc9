# %% [markdown]
# # Coming from TransformerLens
#
# If you know TransformerLens, you know the moves: `run_with_cache`, hook names,
# `hook_pattern`, `stop_at_layer`, `detect_head`, the patching sweeps. This notebook makes each
# one in `interp`, next to TransformerLens 4.x on the same model and the same tokens, and checks
# that the numbers agree. The two differ in how they get there:
#
# - `interp` hooks the real HuggingFace model without switching it to eager attention, keeps
#   q, k, v and z, and computes attention patterns only when asked (TransformerLens stores
#   every layer's `[batch, head, query, key]` pattern, which grows with the square of the length);
# - its patching sweeps put many patches in one forward pass.
#
# | TransformerLens | interp |
# | --- | --- |
# | `logits, cache = model.run_with_cache(text)` | `logits, cache = lm.run_with_cache(text)` |
# | `cache["blocks.5.attn.hook_z"]` `[batch, pos, head, d_head]` | the same name, or `cache["z", 5]` `[batch, head, pos, d_head]` |
# | `cache["blocks.5.attn.hook_pattern"][0, 1]` | `cache.pattern(5, 1)[0]`, or the same name |
# | `model.run_with_cache(text, stop_at_layer=6)` | `lm.run_with_cache(text, stop_at_layer=6)` |
# | `model.run_with_cache(text, names_filter=lambda n: "pattern" in n)` | the same, or `layers=[5], sites=("pattern",)` |
# | `detect_head(model, text, "induction_head")` | `interp score heads`, `interp.experiments.heads.run` |
# | `patching.get_act_patch_attn_head_out_all_pos(...)` | `activation_patching(lm, clean, corrupt, "z", ...).to_grid()` |
#
# The model is the embedded SmolLM2-135M-Instruct. TransformerLens 4.x reaches it through a
# `TransformerBridge` over a second copy of the same weights (booting a bridge rewires the
# model it wraps, so the two must not share one).

# %%
import time

import torch

import interp

lm = interp.load_model()  # our view of the HF model
bridge = interp.load_model(backend="tl").model  # TransformerLens's TransformerBridge over a second copy
text = "When Mary and John went to the store, John gave a drink to"
ids = lm.encode(text)  # [1, pos]; this model has no BOS, and both sides get these same ids
print(f"{ids.shape[1]} tokens:", lm.token_strings(ids[0]))

# %% [markdown]
# ## `run_with_cache` and hook names
# Our cache answers TransformerLens's hook names in TransformerLens's layout, and our own
# `(site, layer)` keys in ours (heads before positions, the layout attention kernels use).
# q and k are post-RoPE, what the attention actually multiplies (TransformerLens's
# `hook_rot_q` / `hook_rot_k`; its `hook_q` is pre-RoPE and our cache refuses it by name).

# %%
logits, cache = lm.run_with_cache(ids)
with torch.no_grad():
    tl_logits, tl_cache = bridge.run_with_cache(ids)
z, tl_z = cache["blocks.5.attn.hook_z"], tl_cache["blocks.5.attn.hook_z"]
print("logits max |ours - TL|", f"{(logits - tl_logits).abs().max():.1e}")
print("hook_z max |ours - TL|", f"{(z - tl_z).abs().max():.1e}", "| shapes", tuple(z.shape), tuple(tl_z.shape))
print('cache["z", 5]', tuple(cache["z", 5].shape), "(batch, head, pos, d_head)")

# %% [markdown]
# Both run the same HF weights, so the logits agree to float32 rounding. The layouts differ:
# `cache["z", 5]` puts the head axis before positions, which is why the TransformerLens name
# exists as an alias rather than as our own layout.
#
# ## The attention pattern
# `cache.pattern(layer, head)` computes the post-softmax attention from the cached q and k with
# the layer's own scale, mask, window, soft-cap and learned sinks, the GQA mapping (query head h
# reads kv head `lm.arch.kv_map[h]`) and the forward pass's padding. Only the heads asked for
# are built, in float64, then returned as float32.

# %%
worst = 0.0
for layer, head in [(0, 0), (5, 1), (17, 4), (29, 8)]:
    ours = cache.pattern(layer, head)[0]  # [query, key]
    theirs = tl_cache[f"blocks.{layer}.attn.hook_pattern"][0, head]
    worst = max(worst, float((ours - theirs).abs().max()))
print(f"pattern max |ours - TL| {worst:.1e} over 4 heads; rows sum to {float(ours.sum(-1).mean()):.4f}")

# %%
from interp.plots import attention_view, pattern_kwargs

layer, head = 17, 4
attention_view(
    cache["q", layer][0, head],
    cache["k", layer][0, lm.arch.kv_map[head]],
    lm.token_strings(ids[0]),
    **pattern_kwargs(lm.attention_kwargs(layer), head),
    layer=layer,
    head=head,
)

# %% [markdown]
# The patterns agree to float32 rounding. For a padded batch (a list of texts), `cache.pattern`
# and `cache.stats` apply the forward's padding mask themselves; a padded key gets no
# attention and a padded query row is all zero.
#
# ## `stop_at_layer`
# Stopping the forward pass after the layers you need saves the rest: with `stop_at_layer=6`
# only layers 0-5 run, nothing is unembedded, and the logits are `None`.

# %%
long_ids = lm.encode("Attention heads read from earlier tokens. " * 25)


def best_of_3(fn):
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


full = best_of_3(lambda: lm.run_with_cache(long_ids, sites=("z", "resid_pre")))
early = best_of_3(lambda: lm.run_with_cache(long_ids, sites=("z", "resid_pre"), stop_at_layer=6))
stopped_logits, stopped = lm.run_with_cache(long_ids, sites=("z", "resid_pre"), stop_at_layer=6)
print(f"stop_at_layer=6: logits {stopped_logits}, z of layers {stopped.layers}")
print(f"{long_ids.shape[1]} tokens: full pass {full:.2f} s, stop_at_layer=6 {early:.2f} s ({early / full:.2f}x)")

# %% [markdown]
# Six of thirty layers, without the unembedding, take a fraction of the full pass: on an idle
# machine close to 6/30 plus the fixed cost of a call (issue 27 asks for under 0.4x). Wall
# times on a loaded machine are noisy (these outputs were made on a shared one), so read the
# ratio, not the seconds.
#
# ## Head detectors: `detect_head` against ours
# TransformerLens's `detect_head` and our `interp score heads` measure the same thing, the
# attention a head puts on each query's *expected* key (previous token; the token after an
# earlier copy of the current one for induction), and report different numbers:
#
# - **the denominator.** TransformerLens (`error_measure="mul"`) divides the summed attention
#   on expected keys by the sum of the whole pattern, which is the number of query rows `T`:
#   rows with no expected key (every token's first occurrence, for induction) count as zeros.
#   We average over the rows that have an expected key (docs/METRICS.md#head-detectors), so a
#   perfect induction head scores 1 with us, and only the share of repeated tokens with
#   TransformerLens;
# - **BOS.** On a model with BOS, we do not count BOS as a previous token's expected key (it is
#   where sink heads park attention, and would make every sink head a "previous-token head");
#   TransformerLens does unless `exclude_bos=True`. This model has no BOS, so only the
#   denominator matters here;
# - **how many earlier copies**: we keep the 8 most recent, TransformerLens all of them (the
#   same on this text).
#
# Recomputing ours in TransformerLens's convention (sum over the rows, divided by `T`) must give
# its numbers exactly; that is the check below.

# %%
from transformer_lens.head_detector import detect_head

from interp.analyses.heads import detector_targets, kind_sums

repeated = "The violet lighthouse keeper counted forty-seven copper gulls at dawn. " * 2
rep_ids = lm.encode(repeated)
T = rep_ids.shape[1]
_, rep_cache = lm.run_with_cache(rep_ids, sites=("q", "k"))
ours_by_kind = {}
for kind, tl_name in (("previous", "previous_token_head"), ("induction", "induction_head")):
    targets, widths, rows = detector_targets(rep_ids, (kind,), bos_id=lm.bos_id)
    sums = torch.stack(
        [
            torch.as_tensor(kind_sums(rep_cache.stats(layer, targets=targets, columns=False).target, widths)[0])
            for layer in range(lm.arch.n_layers)
        ]
    )  # [layer, head]: summed attention on the expected keys
    with torch.no_grad():
        theirs = detect_head(bridge, repeated, tl_name).double()  # [layer, head]
    ours_by_kind[kind] = sums / rows[0]
    diff = float((sums / T - theirs).abs().max())
    print(f"{tl_name}: ours in TL's convention vs detect_head: max diff {diff:.1e}")
    best = divmod(int(theirs.argmax()), lm.arch.n_heads)
    print(
        f"  best head L{best[0]}H{best[1]}: TL {float(theirs[best]):.3f}, ours {float(ours_by_kind[kind][best]):.3f} "
        f"({rows[0]} of {T} rows have an expected key)"
    )

# %% [markdown]
# The two conventions rank heads identically within one text (they differ by the constant
# factor `rows / T`), but TransformerLens's numbers shrink when fewer rows can be scored (a
# short repeat, a long unrepeated prefix), so they cannot be compared across texts or lengths;
# ours can. `interp score heads` runs the detectors on repeated random tokens over many
# sequences, from the kernel's target-key statistic, with no attention matrix.
#
# ## Patching: `get_act_patch_attn_head_out_all_pos` against our sweep
# TransformerLens 4.x still ships `transformer_lens.patching.get_act_patch_attn_head_out_all_pos`,
# and it works on the bridge: for every (layer, head), one corrupted forward pass with that
# head's output `z` replaced by its clean value at every position, returning `[layer, head]`.
# Ours does the same patches in batches of many per forward pass, reuses the corrupted run's
# KV cache for the positions before the first changed token, starts each pass at its lowest
# patched layer and unembeds the answer position only. Same prompt pair, same metric (the
# logit difference of the right and the wrong name).
#
# To keep this notebook fast on a CPU, both sweep the heads of layers 22-25, where notebook 03
# found the name movers (36 patches; TransformerLens takes the same `index_df` of (layer, head)
# rows). Without `index_df` its
# function sweeps all 270 heads; on this model that took 38 s against our 1.8 s when it was
# measured for issue 27, and `benchmarks/patching.py` measures it side by side.

# %%
from transformer_lens import patching as tl_patching

from interp.analyses.patching import logit_diff, target_index
from interp.datasets.ioi import IOIConfig, ioi
from interp.experiments.patching import activation_patching

pair = ioi(lm.tokenizer, IOIConfig(n=1, seed=0), bos=lm.bos_id)  # one clean / corrupted prompt pair
print("clean:  ", lm.decode(pair.clean[0].tolist()))
print("corrupt:", lm.decode(pair.corrupt[0].tolist()))
right, wrong = lm.decode([int(pair.correct[0])]), lm.decode([int(pair.wrong[0])])
print(f"metric: logit({right!r}) - logit({wrong!r}) at the last position")


def metric(logits):
    return logit_diff(logits, pair.correct, pair.wrong)  # [batch]


import pandas as pd

layers = range(22, 26)
site, index, *_ = target_index(lm.arch, "head_out", pair.n_pos, by_pos=False, layers=layers)
start = time.perf_counter()
with torch.no_grad():
    table = activation_patching(lm, pair.clean, pair.corrupt, site, index, metric, progress=False)
ours_s = time.perf_counter() - start
rows = pd.DataFrame({"layer": index[:, 0].numpy(), "head": index[:, 1].numpy()})  # the same 36 (layer, head)
with torch.no_grad():
    _, clean_cache = bridge.run_with_cache(pair.clean)
    start = time.perf_counter()
    theirs = tl_patching.get_act_patch_attn_head_out_all_pos(  # index_df replaces its (layer, head) axes
        bridge, pair.corrupt, clean_cache, lambda logits: metric(logits).mean(), index_axis_names=None, index_df=rows
    )  # [36], in the order of rows
tl_s = time.perf_counter() - start
grid = table.to_grid()  # [layer, head]; NaN in the layers not patched
ours_flat = torch.as_tensor(grid[index[:, 0].numpy(), index[:, 1].numpy()])
print(f"patching sweep: max |ours - TL| {float((ours_flat - theirs.double()).abs().max()):.1e}")
print(f"{len(table)} head patches: ours {ours_s:.1f} s, TransformerLens {tl_s:.1f} s ({tl_s / ours_s:.1f}x)")

# %% [markdown]
# The two sweeps agree to float32 rounding. TransformerLens runs one forward pass per patch (36
# here); ours batches them, so its time grows more slowly with the number of heads. The ratio
# depends on the machine and its load; `benchmarks/patching.py` measures it side by side on
# more prompts (benchmarks/RESULTS.md). `to_grid()` gives the `[layer, head]` array
# TransformerLens returns; `table.to_dataframe()` the labelled table, `table.top(5)` the
# strongest patches.

# %%
from interp.plots import head_grid

head_grid(
    grid,
    title="IOI: logit difference after patching each head's clean output (one pair)",
    colorbar="logit diff",
)

# %% [markdown]
# **Reading the grid.** Only layers 22-25 were patched (the rest is blank). Most heads leave the
# corrupted logit difference where it was; the few that move it (in layers 23-24) are the name movers and negative name movers that
# notebook 03 found with more prompts. With one prompt pair this is a sketch, not a circuit:
# use `interp patch ioi --n 16` for that.
#
# This is the last notebook. The command line (`interp --help`) runs each analysis with
# resumable output, and `interp report` runs all of them into one HTML page.
