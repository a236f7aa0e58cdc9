"""Circuit patching: activation, path and attribution patching, circuits and their overlap.

Definitions follow docs/METRICS.md#circuit-patching: the logit difference LD = logit(correct) -
logit(wrong) at the last position; the normalised score (LD_patched - LD_corrupt) /
(LD_clean - LD_corrupt) is 1 when a component restores the clean behaviour and 0 when it does
nothing.

**Activation patching** (Wang et al. 2022; Meng et al. 2022) is one generic sweep: run the
corrupted prompts, replace one component's activation by its clean value, measure the metric.
Thin setters (`target_index`) turn a target name (head_out, q, k, v, resid_pre, attn_out,
mlp_out) into the list of (layer, head, pos) patches of its canonical site (z and q
``[batch, head, pos, d_head]``; k and v ``[batch, kv_head, pos, d_head]``, so k/v patches are per
kv head; residual sites ``[batch, pos, d_model]``). A forward pass holds ``c`` copies of the ``n``
corrupted prompts and copy ``j`` gets patch ``j``; a patch that copies only values equal to the
corrupted ones is not run; passes are planned in order of their first changed position and
layer, so a pass can start from the corrupted run's cached prefix and residual (`plan_passes`).

**Path patching** (Wang et al. 2022, section 3.1) sends a sender head's clean-minus-corrupt
contribution only along the path into chosen receivers' q, k or v. **Attribution patching**
(Nanda 2023; Syed et al. 2023) estimates every activation patch at once to first order,
(a_clean - a_corrupt) . dM/da (`attribution_estimates`). **Circuits**: the top heads by |score|;
the overlap of two tasks' circuits (Merullo et al. 2023).

Results are labelled like the model: a sweep over token batches returns a `PatchTable` and a
task's run a `PatchResult`, both with ``to_dataframe()`` (``layer``, ``head``, ``position``,
``score``, ``normalised``), ``to_grid()`` ([layer, head] or [layer, head, position]) and ``top(k)``.

This package is pure: the config (`PatchConfig`), metrics over logits, the pass plan, results
and circuits. The runner that drives the model (the sweeps, `patch_task`, `run`) is
`interp.experiments.patching`; the tasks (IOI, Colored Objects, your prompt pairs) come from
`interp.datasets`.
"""

from interp.analyses.patching.circuits import (
    CircuitOverlap,
    circuit_overlap,
    head_scores,
    method_correlation,
    top_heads,
)
from interp.analyses.patching.config import METHODS, METRICS, TARGETS, PatchConfig
from interp.analyses.patching.metrics import Metric, evaluate_metric, logit_diff, make_metric
from interp.analyses.patching.plan import (
    attribution_estimates,
    first_difference,
    patch_mask,
    plan_passes,
    target_index,
)
from interp.analyses.patching.results import Baseline, PatchResult, baseline_of, dense_scores
from interp.analyses.patching.table import PatchTable, normalise

__all__ = [
    "TARGETS",
    "METRICS",
    "METHODS",
    "PatchConfig",
    "Metric",
    "logit_diff",
    "make_metric",
    "evaluate_metric",
    "target_index",
    "first_difference",
    "plan_passes",
    "patch_mask",
    "attribution_estimates",
    "Baseline",
    "PatchResult",
    "PatchTable",
    "normalise",
    "baseline_of",
    "dense_scores",
    "head_scores",
    "top_heads",
    "CircuitOverlap",
    "circuit_overlap",
    "method_correlation",
]
