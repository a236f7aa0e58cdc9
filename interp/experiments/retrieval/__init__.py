"""`interp score retrieval`: retrieval heads by needle-in-a-haystack (Wu et al. 2024).

- `runner`: `run` (trace,
  score and combine every sample, then the causal masking check; resumable, over ranks).
- `traces`: the model side of one sample or a grid: `teacher_trace(s)`, `decode_trace(s)` (the
  scored rows and their top-1 keys, from the kernel), `decode_answers` (answers under edits,
  no kernel).
- `interp.experiments._needles` (shared with the head atlas): `prepare_samples` (the needle grid
  with the model's tokenizer), `greedy_answer` (Wu et al.'s loop), `needle_recall` /
  `teacher_answers` (answers under edits, no kernel), re-exported here.
- `command`: ``interp score retrieval``, its tables, figures and the report's stage (`EXPERIMENT`).

The pure half (config, scoring, the grid's result, the masking check) is
`interp.analyses.retrieval`; the shared-prefix walk is
`interp.hooks.prefix`; the samples come from `interp.datasets.needles`. In a notebook::

    from interp.experiments import Store
    from interp.experiments.retrieval import RetrievalConfig, run
    result = run(lm, RetrievalConfig(lengths=(192,), depths=(0.5,), mask=False), Store())
"""

from interp.analyses.retrieval import RetrievalConfig
from interp.experiments._needles import answer_recall, greedy_answer, needle_recall, prepare_samples, teacher_answers
from interp.experiments.retrieval.command import EXPERIMENT, describe
from interp.experiments.retrieval.runner import run
from interp.experiments.retrieval.traces import (
    decode_answers,
    decode_trace,
    decode_traces,
    teacher_trace,
    teacher_traces,
)

__all__ = [
    "EXPERIMENT",
    "RetrievalConfig",
    "run",
    "prepare_samples",
    "describe",
    "teacher_trace",
    "teacher_traces",
    "teacher_answers",
    "decode_trace",
    "decode_traces",
    "decode_answers",
    "greedy_answer",
    "needle_recall",
    "answer_recall",
]
