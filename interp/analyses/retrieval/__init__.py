"""Retrieval heads: needle-in-a-haystack copy scores per head (Wu et al. 2024), over a grid.

Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality") score a head
by how often it *copies* the answer out of the needle while the model writes it: at each
emitted token w_t, j* = top1 of the query row that produced w_t; the head earns
1 / |answer span| when j* lies in the needle's answer span and token[j*] == w_t
(docs/METRICS.md). A sample counts only when the model's answer has ROUGE-1 recall >= 0.5
against the reference; a head's score is the mean over counted samples; a head with score > 0.1
is a retrieval head. The causal check masks the top-K heads, and K random non-retrieval heads,
and compares needle recall.

- `config`: `RetrievalConfig` (the grid, the mode, the check's K and seeds), `default_k`.
- `scores`: one sample: `RowTrace` (its scored rows' top-1 keys), `score_trace`,
  `copy_events`, `sample_scores`, `rouge1_recall`, `sample_record`.
- `results`: the grid: `aggregate`, `share_above`, `top_heads`, `combine` -> `RetrievalResult`.
- `masking`: the causal check: `masking_conditions`, `random_heads`, `masking_result` ->
  `MaskingResult`.

This package is pure (statistics in, findings out). How the rows are computed (teacher forcing
or the paper's decode loop, the kernel's top-1 instead of materialised attention, shared
prefixes computed once) is the runner's, `interp.experiments.retrieval`; the samples come from
`interp.datasets.needles`.
"""

from interp.analyses.retrieval.config import Condition, Head, RetrievalConfig, default_k
from interp.analyses.retrieval.masking import masking_conditions, masking_result, random_heads
from interp.analyses.retrieval.results import (
    MaskingResult,
    RetrievalResult,
    SampleRecord,
    aggregate,
    combine,
    share_above,
    top_heads,
)
from interp.analyses.retrieval.scores import (
    RowTrace,
    copy_events,
    response_rows,
    rouge1_recall,
    sample_record,
    sample_scores,
    score_trace,
)

__all__ = [
    "RetrievalConfig",
    "RetrievalResult",
    "SampleRecord",
    "MaskingResult",
    "RowTrace",
    "Condition",
    "Head",
    "score_trace",
    "sample_record",
    "copy_events",
    "sample_scores",
    "rouge1_recall",
    "response_rows",
    "aggregate",
    "share_above",
    "top_heads",
    "random_heads",
    "default_k",
    "masking_conditions",
    "combine",
    "masking_result",
]
