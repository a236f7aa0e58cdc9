"""Ray engine for `interp.distributed.map_units` (``--engine ray``; ``pip install 'interp[ray]'``).

The same units of work as the launcher's ranks, mapped over a pool of Ray actors that hold one
model each, for multi-node or elastic runs (``ray start`` on each machine, then run the command
once with RAY_ADDRESS set; without it a local Ray is started on this machine).

The compute function of a map is a closure over the model. It is pickled once per map with the
model left out (a persistent id stands in for every `interp.models.LoadedModel` it reaches); the
model itself goes to the object store once per process and each actor unpickles it once, then
keeps it for every later map (a calibration search runs many). The driver process owns the
run's log: each record is appended as it arrives, so resume files are those of a one-process
run and a stopped run loses only the units in flight.
"""

from __future__ import annotations

import io
import os
import pickle
import weakref
from typing import Any, Callable, Optional, Sequence, no_type_check

from interp.errors import InterpError

try:
    import ray
    from ray import cloudpickle
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise InterpError("--engine ray needs Ray: pip install 'interp[ray]' (or pip install ray)") from _err

__all__ = ["ray_map"]

_MODELS: dict[int, tuple[weakref.ref, str, Any]] = {}  # id(model) -> (ref, token, object-store ref)
_POOL: dict[str, Any] = {"size": 0, "actors": []}


class _ModelOutPickler(cloudpickle.CloudPickler):
    """cloudpickle that writes a token instead of each model it meets."""

    def __init__(self, file, tokens: dict[int, str]):
        super().__init__(file)
        self.tokens = tokens

    def persistent_id(self, obj):
        from interp.models import LoadedModel

        if isinstance(obj, LoadedModel):
            token = f"model-{id(obj)}-{os.getpid()}"
            self.tokens[id(obj)] = token
            if id(obj) not in _MODELS or _MODELS[id(obj)][0]() is not obj:
                _MODELS[id(obj)] = (weakref.ref(obj), token, ray.put(cloudpickle.dumps(obj)))
            return token
        return None


class _ModelInUnpickler(pickle.Unpickler):
    def __init__(self, file, models: dict[str, Any]):
        super().__init__(file)
        self.models = models

    def persistent_load(self, pid):
        return self.models[pid]


@ray.remote
@no_type_check  # the test-time type-check hook cannot wrap a Ray actor class
class _Worker:
    """One Ray actor: holds the models it was sent and runs units of work on them."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.models: dict[str, Any] = {}
        self.fns: dict[str, Callable] = {}

    def run(self, fn_id: str, fn_ref: list, model_refs: dict, key: str):
        for token, ref in model_refs.items():  # refs arrive wrapped, so only missing models are fetched
            if token not in self.models:
                self.models[token] = cloudpickle.loads(ray.get(ref[0]))
        if fn_id not in self.fns:
            self.fns = {fn_id: _ModelInUnpickler(io.BytesIO(ray.get(fn_ref[0])), self.models).load()}
        return self.fns[fn_id](key)


def _pool(workers: Optional[int], needed: int) -> list:
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cpus = int(ray.available_resources().get("CPU", 1)) or 1
    size = max(1, min(workers or cpus, needed))
    if _POOL["size"] != size:
        for actor in _POOL["actors"]:
            ray.kill(actor)
        threads = max(1, cpus // size)
        # a fractional CPU share per actor, so more workers than CPUs still all start
        _POOL.update(size=size, actors=[_Worker.options(num_cpus=cpus / size).remote(threads) for _ in range(size)])
    return _POOL["actors"]


def ray_map(
    keys: Sequence[str],
    compute: Callable[[str], Any],
    *,
    log,
    resumed: dict,
    workers: Optional[int],
    what: str,
    progress: bool,
) -> dict[str, Any]:
    """`interp.distributed.map_units` on Ray actors: ``{key: compute(key)}`` in ``keys`` order.

    Units already in ``resumed`` are not recomputed; each new record is added to ``log`` as it
    arrives (in arrival order; the log is keyed, so order does not matter on resume).
    """
    from tqdm.auto import tqdm

    records: dict[str, Any] = {}
    for key in keys:
        if key in resumed:
            records[key] = resumed[key]
            if log is not None and not log.done(key):
                log.add(key, records[key])
    todo = [k for k in keys if k not in records]
    if todo:
        tokens: dict[int, str] = {}
        buf = io.BytesIO()
        _ModelOutPickler(buf, tokens).dump(compute)
        fn_ref = ray.put(buf.getvalue())
        model_refs = {token: [_MODELS[obj_id][2]] for obj_id, token in tokens.items()}
        actors = _pool(workers, len(todo))
        fn_id = fn_ref.hex()
        pending: dict[Any, str] = {}
        queue = list(todo)
        idle = list(actors)
        bar = tqdm(total=len(todo), desc=f"{what} (ray)", unit="unit", disable=not progress)
        busy: dict[Any, Any] = {}
        try:
            while queue or pending:
                while queue and idle:
                    actor, key = idle.pop(), queue.pop(0)
                    ref = actor.run.remote(fn_id, [fn_ref], model_refs, key)
                    pending[ref], busy[ref] = key, actor
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    key, actor = pending.pop(ref), busy.pop(ref)
                    try:
                        records[key] = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        if isinstance(err.cause, InterpError):
                            raise InterpError(str(err.cause)) from None
                        raise
                    if log is not None:
                        log.add(key, records[key])
                    idle.append(actor)
                    bar.update(1)
        finally:
            bar.close()
            for ref in pending:
                ray.cancel(ref)
    return {key: records[key] for key in keys}
