"""`interp calibrate act|zerotune`: choose a calibration on a choice set's calibration split and
evaluate it on the held-out split (Yu et al. 2024, ACT; Han et al. 2025, ZeroTuning).

The runner builds the interventions for the model's heads (`act_edits`, `zerotune_edits`: key
biases inside the model's own attention, `interp.hooks.intervene`), scores batches of prompts
by their answer-choice logits (`score_choices`), and runs the search of
`interp.analyses.calibration` step by step. Each search step (baseline, one head set tried,
one gamma, held-out before and after) is one record of ``samples.jsonl``: a re-run with the
same folder resumes. Within a step the batches of prompts are shared over the ranks (the
search itself runs in lockstep on all of them); rank 0 writes the log.

- `edits`: the model side: `act_edits`, `zerotune_edits`, `choice_token_ids`, `score_choices`,
  `rank_act_candidates`.
- `search`: `run`: the baseline, the ACT head search or the ZeroTuning gamma search on the
  calibration split, then the held-out scoring before and after, each step resumable.
- `command`: ``interp calibrate act|zerotune``, the tables, figures and finding (`EXPERIMENTS`).
"""

from interp.experiments.calibration.command import ACT, EXPERIMENTS, ZEROTUNE, describe
from interp.experiments.calibration.edits import (
    act_edits,
    choice_token_ids,
    rank_act_candidates,
    score_choices,
    zerotune_edits,
)
from interp.experiments.calibration.search import run

__all__ = [
    "EXPERIMENTS",
    "ACT",
    "ZEROTUNE",
    "act_edits",
    "zerotune_edits",
    "choice_token_ids",
    "score_choices",
    "rank_act_candidates",
    "run",
    "describe",
]
