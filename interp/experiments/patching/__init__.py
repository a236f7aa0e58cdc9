"""Circuit patching joined to a model: the sweeps, the runner and the commands.

- `sweeps`: `activation_patching` (the one generic sweep, batched, with exact savings) and
  `attribution_patching`, over token batches; `task_baseline`.
- `path`: `path_patching` sender heads -> receivers' q/k/v (Wang et al. 2022), `path_patch_task`.
- `runner`: `patch_task` (one target of any `TaskBatch`) and `run`, the experiment's runner
  (task from the config, resume from ``patch_log.jsonl``, the position map).
- `command`: ``interp patch ioi|colored-objects|pairs`` and the report's "patching" stage.

The pure half (config, metrics, pass plan, results, circuits) is `interp.analyses.patching`; the
tasks are `interp.datasets` (`make_task`, `task_from_jsonl`, `task_from_prompts`). In a notebook::

    from interp.analyses.patching import PatchConfig
    from interp.experiments.patching import run
    result = run(lm, PatchConfig(task="ioi", n=8))
"""

from interp.experiments.patching.command import EXPERIMENTS
from interp.experiments.patching.path import path_patch_task, path_patching
from interp.experiments.patching.runner import patch_task, run, task_for
from interp.experiments.patching.sweeps import activation_patching, attribution_patching, task_baseline

__all__ = [
    "EXPERIMENTS",
    "run",
    "patch_task",
    "task_for",
    "task_baseline",
    "activation_patching",
    "attribution_patching",
    "path_patching",
    "path_patch_task",
]
