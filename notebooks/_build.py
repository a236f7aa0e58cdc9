"""Write the notebooks in this folder from the cell sources below (run: python notebooks/_build.py).

The notebooks are generated so they stay reviewable: edit the cells here, re-run this script,
and commit both. Outputs are never committed (every cell is written without outputs and with a
fixed cell id, so re-running gives the same files). tests/acceptance/test_notebooks.py executes
every notebook top to bottom on the embedded model and checks the files match this script.

Each notebook runs at small sizes (a minute or so on a laptop CPU); the comments say which
knob to raise for real numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import warnings
warnings.filterwarnings("ignore", category=FutureWarning)
import interp
lm = interp.load_model()  # the embedded SmolLM2-135M-Instruct (no download)
lm.arch"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["00_quickstart"] = [
    (
        "md",
        """\
# interp quick start

Load the embedded model, capture one layer's queries and keys, reduce every layer's attention to
per-head statistics without building the attention matrix, and look at one head's pattern.
Everything here runs on a laptop CPU in well under a minute.""",
    ),
    ("code", SETUP),
    ("md", "## Next-token guesses\n`lm.forward` returns logits `[batch, pos, vocab]`."),
    (
        "code",
        """\
import torch
ids = lm.encode("The capital of France is")
logits = lm.forward(ids)
top = torch.softmax(logits[0, -1], -1).topk(5)
[(lm.decode([int(i)]), round(float(p), 3)) for p, i in zip(top.values, top.indices)]""",
    ),
    (
        "md",
        """\
## Per-head statistics of every layer, streamed
`interp.hooks.capture(on_layer=...)` hands each layer's post-RoPE q and k to a callback while the
model runs; `interp.kernels.attention_stats` reduces them to row and column statistics
(docs/METRICS.md). Here: the mean attention each head puts on the first token (its *sink* mass).""",
    ),
    (
        "code",
        """\
from interp.hooks import capture
from interp.kernels import attention_stats

text = "Attention heads read from earlier tokens. " * 6
ids = lm.encode(text)
sink = torch.zeros(lm.arch.n_layers, lm.arch.n_heads)

def on_layer(layer, q, k, v):
    st = attention_stats(q, k, **lm.attention_kwargs(layer), columns=False)  # the layer's scale, window, cap
    sink[layer] = st.sink[0, :, 1:].mean(-1)  # rows after the first see more than token 0

with capture(lm, keep=(), on_layer=on_layer):
    lm.forward(ids)
print(f"{ids.shape[1]} tokens; mean first-token mass {sink.mean():.2f}")""",
    ),
    (
        "code",
        """\
from interp.plots import head_grid
head_grid(sink.numpy(), title="mass on the first token, per head", colorbar="sink mass")""",
    ),
    (
        "md",
        """\
## One head's attention pattern
A sentence said twice: a head that copies from context attends, on the second copy, to the token
after the first occurrence of the current token. Hover a cell for the query and key tokens.
`attention_view` takes arrays, never the model: exact up to 1024 tokens, block-pooled above.""",
    ),
    (
        "code",
        """\
from interp.plots import attention_view, pattern_kwargs

layer, head = 3, int(sink[3].argmin())  # the head of layer 3 that sinks least
text = "The violet lighthouse keeper counted forty-seven copper gulls at dawn. " * 2
ids = lm.encode(text)
with capture(lm, layers=[layer], keep=("q", "k")) as cap:
    lm.forward(ids)
q = cap["q", layer][0, head]                   # [pos, d_head]
k = cap["k", layer][0, lm.arch.kv_map[head]]   # the kv head this query head reads
attention_view(q, k, lm.token_strings(ids[0]), **pattern_kwargs(lm.attention_kwargs(layer), head), layer=layer, head=head)""",
    ),
    (
        "md",
        """\
## Save a figure
`save_figure` writes one HTML file with plotly.js inside: it opens with no network. The whole
report of every analysis is one command: `interp report --out out/report`.""",
    ),
    (
        "code",
        """\
import tempfile, pathlib
from interp.plots import save_figure
path = save_figure(head_grid(sink.numpy(), title="sink mass"), pathlib.Path(tempfile.mkdtemp()) / "sinks.html")
print(path, path.stat().st_size // 1024, "KiB")""",
    ),
]

NOTEBOOKS["01_retrieval"] = [
    (
        "md",
        """\
# Retrieval heads (Wu et al. 2024)

Needle-in-a-haystack prompts; a head earns credit when the token it attends to most is the needle
token the model copies next. Heads scoring above 0.1 are retrieval heads. Small sizes here: raise
`lengths` and `depths` (and keep `mask=True`, the causal check) for real numbers.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from interp.experiments import Store
from interp.experiments.retrieval import RetrievalConfig, run
config = RetrievalConfig(lengths=(192,), depths=(0.5,), mask=False)  # 3 needles x 1 length x 1 depth
result = run(lm, config, Store())
print(f"{result.share:.1%} of heads score > {config.threshold} over {result.n_samples} counted samples")
result.to_dataframe().sort_values("rank").query("rank > 0").head(10)""",
    ),
    (
        "code",
        """\
from interp.plots.retrieval import figure
figure(result)""",
    ),
    (
        "md",
        """\
## What the top head does
On a sentence said twice, a copying head looks, from each token of the second copy, at the token
that followed it in the first copy: the stripe parallel to the diagonal.""",
    ),
    (
        "code",
        """\
from interp.hooks import capture
from interp.plots import attention_view, pattern_kwargs

layer, head, score = result.top(1)[0]
ids = lm.encode("The violet lighthouse keeper counted forty-seven copper gulls at dawn. " * 2)
with capture(lm, layers=[layer], keep=("q", "k")) as cap:
    lm.forward(ids)
attention_view(cap["q", layer][0, head], cap["k", layer][0, lm.arch.kv_map[head]], lm.token_strings(ids[0]),
               **pattern_kwargs(lm.attention_kwargs(layer), head), layer=layer, head=head)""",
    ),
]

NOTEBOOKS["02_sinks"] = [
    (
        "md",
        """\
# Attention sinks (Gu et al. 2024; Yu et al. 2024)

How much attention each head puts on the first token (the *sink rate*: share of heads with
alpha_0 > 0.3), and which other tokens become *hidden* sinks (received attention > 0.1). Small
sizes here: raise `length` and `max_texts` for real numbers.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from interp.analyses.sinks import SinkConfig
from interp.experiments import sinks
config = SinkConfig(length=128, max_texts=2)  # raise for real numbers (defaults: 256 tokens, all 32 texts)
result = sinks.run(lm, config)  # pass a Store("runs/sinks") to keep tables and resume
print(f"sink rate at position 0: {result.sink_rate:.1f}% of (text, layer, head)")
result.to_dataframe().head()""",
    ),
    ("code", "result.layer_sink_rates().head(10)"),
    ("code", "result.token_type_table()"),
    (
        "code",
        """\
from interp.plots.sinks import first_token_mass_grid, layer_sink_rates
first_token_mass_grid(result)""",
    ),
    ("code", "layer_sink_rates(result)"),
    (
        "md",
        """\
## The head atlas (issue 22)

Every head's use of a long context against query position (first-token and sink mass, entropy,
distance, recent and distant mass), a kind per head, and a KV-cache policy: the heads whose
distant mass stays under 0.05 keep only 4 sink tokens and a recent window. `interp atlas` also
checks the policy causally (`causal.csv`) and writes an interactive page (`atlas.html`).""",
    ),
    (
        "code",
        """\
from interp.analyses.atlas import AtlasConfig
from interp.experiments import atlas
# the command's run: length=8192 (the default) with the causal check on a held-out window
atlas_result = atlas.run(lm, AtlasConfig(length=512, windows=(32, 128), max_texts=1, causal_texts=0))
print(atlas_result.summary()["kinds"], "KV cache saved:", atlas_result.policy()["kv_saved"])
atlas_result.to_dataframe()[["layer", "head", "sink", "prev", "distant_128", "concentration", "kind"]].head(10)""",
    ),
]

NOTEBOOKS["03_patching"] = [
    (
        "md",
        """\
# IOI circuit patching (Wang et al. 2022)

Indirect-object identification: "When Mary and John went to the store, John gave a drink to" ->
" Mary". Patch each head's clean output into the corrupted run and measure how much of the clean
logit difference comes back (normalised score: 1 = all of it, 0 = nothing). Small sizes here:
raise `n` and patch every layer for real numbers.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from interp.analyses.patching import PatchConfig, top_heads
from interp.experiments.patching import run
# activation patching of the head outputs of three late layers (every layer: layers=None)
config = PatchConfig(task="ioi", n=2, layers=(22, 23, 24))
result = run(lm, config)
print(result.baseline)
top_heads(result, 5)""",
    ),
    (
        "code",
        """\
from interp.plots.patching import patch_figure
patch_figure(result)""",
    ),
    (
        "md",
        """\
## Where the answer is written: the residual stream by position
Attribution patching estimates every (layer, position) patch at once from one forward and one
backward pass.""",
    ),
    (
        "code",
        """\
resid = run(lm, PatchConfig(task="ioi", n=2, target="resid_pre", by_pos=True, method="attribution"))
patch_figure(resid)""",
    ),
]

NOTEBOOKS["04_preplan"] = [
    (
        "md",
        """\
# Preplan and anchor tokens (Li et al. 2025)

Local heads (short attention span) show a rhythm in WAAD, the windowed attention distance: its
jumps mark *preplan* tokens. Global heads show which tokens later text keeps returning to (FAI):
the *anchors*. Small sizes here: raise `max_new_tokens` for a longer answer.""",
    ),
    ("code", SETUP),
    (
        "code",
        """\
from interp.analyses.preplan import PreplanConfig
from interp.datasets.prompts import default_prompts
from interp.experiments import preplan
config = PreplanConfig(prompts=default_prompts()[:1], max_new_tokens=32)  # raise for a longer answer
run = preplan.run(lm, config)  # pass a Store("runs/preplan") to keep tables and resume
result = run.results[0]  # one PreplanResult per prompt
print(result.response)
result.summary()""",
    ),
    ("code", "result.to_dataframe().head(12)"),
    (
        "code",
        """\
from IPython.display import HTML
from interp.plots.preplan import highlighted_text_html, waad_figure, fai_figure, span_figure
css = "<style>.preplan{background:#f4a261}.anchor{background:#8ecae6}.both{background:#c77dff}.dom{box-shadow:0 0 0 2px #d00000}.resp{white-space:pre-wrap;font-family:monospace}</style>"
HTML(css + highlighted_text_html(result))""",
    ),
    ("code", "waad_figure(result)"),
    ("code", "fai_figure(result)"),
    ("code", "span_figure(result)"),
]

NOTEBOOKS["05_heads"] = [
    (
        "md",
        """\
# Head analyses: detectors, select-and-copy, QRHead, AttentionInfluence

Four head analyses, each from the kernel's statistics (no attention matrix): the classic
previous-token / duplicate-token / induction detectors, select-and-copy heads on multiple-choice
questions (Tulchinskii et al. 2024), query-focused retrieval heads (QRHead) and AttentionInfluence
(the loss change when heads are made uniform). Small sizes here; the comments say what to raise.""",
    ),
    ("code", SETUP),
    (
        "md",
        "## Previous-token, duplicate-token and induction heads\nMean attention on the expected key, on random tokens said twice.",
    ),
    (
        "code",
        """\
from interp.analyses.heads import HeadConfig
from interp.experiments import heads as head_detectors
from interp.plots.heads import detector_figure
heads = head_detectors.run(lm, HeadConfig(n_seqs=4, length=32))  # raise n_seqs / length for tighter scores
print({kind: heads.top(kind, 3) for kind in heads.kinds})
detector_figure(heads)""",
    ),
    (
        "md",
        "## Select-and-copy heads\nPer head: how often the final query's QK-score on each option's end-of-line token picks the answer.",
    ),
    (
        "code",
        """\
from interp.analyses.select_copy import SelectCopyConfig
from interp.experiments import select_copy
from interp.plots.heads import select_copy_figure
sc = select_copy.run(lm, SelectCopyConfig(max_questions=8))  # None = all 60 shipped questions
print(sc.summary(3))
select_copy_figure(sc)""",
    ),
    (
        "md",
        "## Query-focused retrieval heads (QRHead)\nAttention from the query span to the answering document, minus a null query.",
    ),
    (
        "code",
        """\
from interp.analyses.qr_heads import QRConfig
from interp.experiments import qr_heads
from interp.plots.heads import qr_heads_figure
qr = qr_heads.run(lm, QRConfig(max_samples=4))  # None = the 16 shipped samples
qr.to_dataframe().sort_values("qr_score", ascending=False).head()""",
    ),
    ("code", "qr_heads_figure(qr)"),
    (
        "md",
        "## AttentionInfluence\nMake heads uniform and rank texts by the relative loss increase. Here: the top induction heads.",
    ),
    (
        "code",
        """\
from interp.analyses.influence import InfluenceConfig
from interp.experiments import influence
from interp.plots.heads import influence_figure
texts = ("The cat sat on the mat. The cat sat on the mat. The cat sat on the", "Numbers: 3, 14, 15, 92, 65, 35, 89, 79")
ai = influence.run(lm, InfluenceConfig(heads=tuple((l, h) for l, h, _ in heads.top("induction", 4)), texts=texts))
ai.to_dataframe()""",
    ),
    ("code", "influence_figure(ai)"),
]


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook into ``folder``; return their paths."""
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        for i, (kind, source) in enumerate(cells):
            cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
            cell.id = f"{name.replace('_', '-')}-{i:02d}"
            nb.cells.append(cell)
        nbformat.validate(nb)
        path = folder / f"{name}.ipynb"
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for p in build(target):
        print(p)
