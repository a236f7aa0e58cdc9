"""Training-free attention calibrations (ACT, ZeroTuning) as scoped interventions, and whether they help.

Both calibrations are key biases on chosen heads (`interp.hooks.key_bias`: an extra q/k
dimension adds a bias to the scores of chosen keys inside the model's own fused attention; no
[T, T] tensor anywhere):

- ZeroTuning (initial-token scaling; Han et al. 2025): A'_i0 = gamma A_i0 / D,
  A'_ij = A_ij / D with D = (gamma - 1) A_i0 + 1, which is a bias of log(gamma) on key 0.
- ACT (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks"), beta = 0.4: for j in
  the head's sink set S, A'_ij = beta A_ij, and the removed mass goes to the other visible keys
  in proportion to A_ij. With m_i = sum_{j in S} A_ij this is a per-row bias on the keys of S:

      b_i = log(beta (1 - m_i) / (1 - beta m_i))

  (S keys get e^b / Z = beta with Z = 1 - m + m e^b = (1 - m) / (1 - beta m); other keys get
  1 / Z = (1 - beta m) / (1 - m), exactly the proportional share). Rows with m_i = 1 have no
  other key to receive the mass and are left unchanged (b_i = 0).
  S and m_i are computed *inside the same forward pass*, at the head's layer, from the live q
  and k (`ACTRule`, called by a `interp.hooks.ComputedKeyBias`): one kernel call gives recv_mean (hence S: `sink_members`, the hidden
  sinks by default since ACT keeps the initial sink), a second gives m_i as the ``seg``
  statistic of a segment labelling S; then the bias is added. Earlier calibrated heads are
  therefore seen by later ones, as in the original method.

Evaluation: the choice sets (`interp.datasets.choices`; shipped under `interp/data/tasks`) are
scored by the next-token logits restricted to the answer tokens (`choice_scores`). ACT heads are
searched greedily on the calibration split (candidates: the heads with the largest hidden-sink
mass on the calibration prompts, `hidden_sink_mass`, ranked by `interp.analyses.rank_heads`;
each candidate is added if it improves calibration accuracy, ties broken by the mean log-prob of
the correct answer, `better`); ZeroTuning's gamma is chosen on a small grid. Held-out accuracy before and after is
reported with Wilson intervals, a paired bootstrap interval of the difference and an exact
McNemar test.

Checks (`interp.analyses.checks`, `CalibrationResult.checks`): the finding rests on enough
held-out items (``heldout_items``), a held-out split that shares no prompt with the calibration
split the setting was chosen on (``heldout_disjoint``), an uncalibrated model above the accuracy
guessing reaches by luck on those items (``base_above_chance``: at chance there is nothing to
calibrate, and a change is noise), and for ACT, calibrated heads that carry hidden-sink mass
above tau on the calibration prompts (``act_heads_sink_mass``: else ACT scales almost nothing).

This package is pure: `act` (ACT's bias, its rule `ACTRule` that a
`interp.hooks.ComputedKeyBias` calls on the live q and k inside the model's forward pass, the
first-token keys of ZeroTuning, the candidate score), `scoring` (the answer-choice scores and the
search criterion) and `result` (the frozen `CalibrationConfig` and `CalibrationResult`); the
intervals and the test are `interp.analyses.stats`. The runner that drives the model (the edits
for a model's heads, batched scoring, the searches, resume) is `interp.experiments.calibration`.
"""

from interp.analyses.calibration.act import (
    ACTRule,
    act_bias,
    check_beta,
    check_gamma,
    first_token_keys,
    head_pairs,
    hidden_sink_mass,
)
from interp.analyses.calibration.result import CHECK_SETTINGS, CalibrationConfig, CalibrationResult, Head
from interp.analyses.calibration.scoring import better, choice_scores
from interp.analyses.stats import mcnemar_exact, paired_bootstrap_diff, wilson_interval

__all__ = [
    "CalibrationConfig",
    "CalibrationResult",
    "ACTRule",
    "act_bias",
    "first_token_keys",
    "check_beta",
    "check_gamma",
    "head_pairs",
    "choice_scores",
    "hidden_sink_mass",
    "better",
    "wilson_interval",
    "paired_bootstrap_diff",
    "mcnemar_exact",
    "CHECK_SETTINGS",
    "Head",
]
