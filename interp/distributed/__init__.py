"""Scale-out: independent units of work sharded over ranks, resumable parts, a merge on rank 0.

Every scoring command is a map over independent units of work (texts, needle samples, prompts,
batches of task items, patch chunks) followed by a cheap aggregate. This module owns the map:

- `world()` reads the rank layout the standard launchers give every process (``torchrun``,
  ``accelerate launch``: RANK / WORLD_SIZE / LOCAL_RANK; Slurm ``srun``: SLURM_PROCID /
  SLURM_STEP_NUM_TASKS / SLURM_LOCALID) and joins the ``torch.distributed`` process group
  (gloo by default: only small Python records travel, never tensors).
- `map_units(keys, compute, log=...)` gives rank r the keys ``keys[r::world_size]``, computes
  the ones no earlier run finished, appends each to the rank's own part
  (``parts/<log>.rank-RRR-of-WWW.jsonl``, a settings-stamped `SampleLog`), gathers every rank's
  records and has rank 0 append them, in key order, to the run's main log. Every rank returns
  the same complete ``{key: record}``, so the aggregate that follows is the one of a single
  process, and a later one-process run with the same folder resumes everything.
- `open_log` opens a run's main log on every rank (rank 0 alone touches the file).
- ``engine="ray"`` (`map_units`'s ``engine``, the CLI's ``--engine ray``) maps the same units over
  Ray actors that hold one model each (``pip install 'interp[ray]'``), with the same log and resume files.
- `Launch` and `LoadOptions` are the launch options as frozen values, built by the CLI from its
  flags and passed down (`rank_model` loads and places a rank's model by them).

Failures are collective: an `InterpError` on any rank (bad settings, a part from another run,
more ranks than units) is raised on every rank, before any result is written.
"""

from interp.distributed._launch import (
    Launch,
    LoadOptions,
    parse_max_memory,
    rank_device,
    rank_max_memory,
    rank_model,
)
from interp.distributed._logs import lock_run_folder, log_add, open_log, open_parted_log, part_path
from interp.distributed._map import finished, map_units
from interp.distributed._world import World, barrier, settings_digest, world

__all__ = [
    "World",
    "world",
    "map_units",
    "finished",
    "open_log",
    "open_parted_log",
    "log_add",
    "lock_run_folder",
    "barrier",
    "settings_digest",
    "part_path",
    "Launch",
    "LoadOptions",
    "rank_model",
    "rank_device",
    "rank_max_memory",
    "parse_max_memory",
]
