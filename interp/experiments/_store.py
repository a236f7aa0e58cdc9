"""`Store`: one run's output folder (resume logs, tables, figures, run.json), the one door every
experiment writes through (see `interp.experiments`)."""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

__all__ = ["Store"]


class Store:
    """One run's output folder: resume logs, tables, figures and run.json.

    Args:
        folder: the output folder (created, checked writable now, before any long work); None
            keeps nothing: `map` computes every unit and the writers do nothing.
        fresh: ignore finished work in the folder's logs and start over.
        plotlyjs: how figure pages get plotly.js: True embeds it (pages open offline), a path
            such as ``"../plotly.min.js"`` references one shared copy (the report).
        png: also write PNGs of static figures where an image backend (kaleido) works (best
            effort: nothing and no error where none does; the report's default).
        images: formats (png, svg, pdf) written beside each static figure's HTML
            (`interp.plots.export.save_images`: an `InterpError` where they cannot be written).
        progress: show the progress bars of units of work (rank 0 only).
        command: the command that owns the folder (``"score sinks"``): recorded in run.json and
            in every log's stamp; a folder holding another command's output is refused
            (`interp.runs.claim_folder`). None: not checked (notebooks, the report's stages).
        engine: how `map` runs its units: ``"ranks"`` or ``"ray"`` (`interp.distributed.Launch.engine`).
        workers: with ``engine="ray"``, the number of actors.

    A folder is locked for this run (`interp.runs.lock_folder`, taken by rank 0 for all ranks)
    until `close`; temporary files a killed run left there are removed. A command refused
    before any work finished leaves no file, and no folder it created.

    Raises:
        InterpError: the folder cannot be written, or another run holds it.
    """

    def __init__(
        self,
        folder: Optional[str | os.PathLike] = None,
        *,
        fresh: bool = False,
        plotlyjs: bool | str = True,
        png: bool = False,
        images: Sequence[str] = (),
        progress: bool = True,
        engine: str = "ranks",
        workers: Optional[int] = None,
        command: Optional[str] = None,
    ) -> None:
        from interp.runs import prepare_out_dir

        self._created = folder is not None and not Path(folder).exists()
        self.folder: Optional[Path] = prepare_out_dir(folder) if folder is not None else None
        self._lock: Any = None
        self._opened = time.time()
        self.command = command
        self.launch: dict[str, Any] = {}  # the settings of the model that change numbers (`bind`)
        if self.folder is not None:
            self._take_folder()
        self.fresh = fresh
        self.plotlyjs = plotlyjs
        self.png = png
        self.images = tuple(images)
        self.progress = progress
        self.engine = engine
        self.workers = workers
        self.notes: dict[str, Any] = {}
        self.written: list[str] = []
        self._logs: dict[str, Any] = {}

    def _take_folder(self) -> None:
        from interp.distributed import lock_run_folder
        from interp.runs import claim_folder

        try:
            lock = lock_run_folder(self.folder)
        except BaseException:
            self.close(failed=True)
            raise
        if lock is not None:  # released by close, or when a notebook's store is collected
            self._lock = weakref.finalize(self, lock.release)
        try:
            if self.command is not None:
                claim_folder(self.folder, self.command)  # under the lock: no other run writes meanwhile
        except BaseException:
            self.close(failed=True)
            raise

    def close(self, failed: bool = False) -> None:
        """Release the folder's lock; after a ``failed`` run, remove the folder if this store
        created it and nothing was kept there."""
        if self._lock is not None:
            if failed and self.folder is not None and getattr(self, "_logs", None):  # this run opened a log
                from interp.runs import add_part_time

                add_part_time(self.folder, time.time() - self._opened)  # kept work: its time counts on resume
            self._lock()  # a finalizer runs once
            self._lock = None
        if failed and self._created and self.folder is not None:
            try:
                self.folder.rmdir()  # only when empty; another rank may have removed it first
            except OSError:
                pass

    def bind(self, lm: Any, config: Any = None) -> None:
        """Stamp every log opened from now on with the model's settings that change numbers
        (dtype, attention implementation, model backend, device, device map, BOS choice, and the
        kernel backend ``config.backend`` resolves to): a resumed run must agree on them.

        Raises:
            InterpError: ``config.backend`` cannot run on the model's device (``triton`` on CPU).
        """
        from interp.runs import model_settings

        self.launch = model_settings(lm, kernel_backend=getattr(config, "backend", None))

    def note(self, **settings: Any) -> None:
        """Record settings beside the config's (data files and their digests) for run.json."""
        self.notes.update(settings)

    def log(self, settings: Mapping[str, Any], name: str = "samples.jsonl", *, parted: bool = False) -> Any:
        """The resume log ``name`` of this folder (opened once; None without a folder).

        Args:
            settings: what a resumed run must agree on; a folder holding other settings is an
                `InterpError` that says to use a new folder or ``--fresh``.
            parted: a log whose records are not one per unit key (`interp.distributed.open_parted_log`).
        """
        if self.folder is None:
            return None
        if name not in self._logs:
            from interp.distributed import open_log, open_parted_log

            opener = open_parted_log if parted else open_log
            stamp = {**settings, "launch": self.launch} if self.launch else dict(settings)
            if self.command is not None:
                stamp["command"] = self.command
            self._logs[name] = opener(self.folder / name, stamp, fresh=self.fresh)
        return self._logs[name]

    def map(
        self,
        keys: Sequence[str],
        compute: Optional[Callable[[str], Any]] = None,
        *,
        settings: Optional[Mapping[str, Any]] = None,
        what: str,
        log: Optional[str] = "samples.jsonl",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``{key: compute(key)}`` over the ranks, resumed from the log ``log`` (`interp.distributed.map_units`).

        ``log=None``: the units are not logged (e.g. the batches of one search step, which
        `cached` records as a whole); ``settings`` then need only agree across the ranks.
        """
        from interp.distributed import map_units

        if log is not None and settings is None:
            raise TypeError("Store.map with a log needs the settings a resumed run must agree on")
        kwargs.setdefault("progress", self.progress)
        opened = self.log(settings, log) if log is not None else None
        stamp = dict(settings) if settings is not None else None
        return map_units(
            keys, compute, log=opened, settings=stamp, what=what, engine=self.engine, workers=self.workers, **kwargs
        )

    def cached(
        self, key: str, compute: Callable[[], dict], *, settings: Mapping[str, Any], log: str = "samples.jsonl"
    ) -> dict:
        """One step run in lockstep on every rank (a search step), done once per folder: the
        record of ``key`` in the log ``log`` when an earlier run finished it, else ``compute()``,
        recorded (rank 0 writes, the other ranks keep it in memory)."""
        from interp.distributed import log_add

        opened = self.log(settings, log)
        if opened is not None and opened.done(key):
            return {k: v for k, v in opened.records[key].items() if k != "id"}
        record = compute()
        log_add(opened, key, record)
        return record

    def bar(
        self,
        iterable: Optional[Iterable] = None,
        *,
        total: Optional[int] = None,
        desc: str,
        unit: str = "unit",
        show: bool = True,
    ) -> Any:
        """A progress bar (tqdm): iterate it over ``iterable``, or ``update`` it towards ``total``.
        Shown on rank 0 when ``show`` and the store shows progress; it leaves no line behind."""
        from tqdm.auto import tqdm

        from interp.distributed import world

        shown = show and self.progress and world().main
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not shown, leave=False)

    def write_table(self, name: str, df: Any) -> None:
        """``name``.csv, atomically."""
        if self.folder is not None:
            from interp.runs import atomic_write_csv

            atomic_write_csv(self.folder / f"{name}.csv", df)
            self.written.append(f"{name}.csv")

    def write_figures(self, figures: Mapping[str, Any]) -> None:
        """``name``.html for each figure (and pictures of the static ones: ``images``, ``png``)."""
        if self.folder is None:
            return
        from interp.plots.export import save_figure

        for name, fig in figures.items():
            save_figure(fig, self.folder / f"{name}.html", include_plotlyjs=self.plotlyjs)
            self.written.append(f"{name}.html")
        self.write_images(figures)

    def write_images(self, figures: Mapping[str, Any]) -> None:
        """Pictures of the static ``figures``: each format of ``images`` (errors raised), and
        best-effort PNGs with ``png``."""
        if self.folder is None:
            return
        from interp.plots.export import save_images, save_pngs

        pairs = [(fig, self.folder / f"{name}.html") for name, fig in figures.items()]
        written = save_images(pairs, self.images) if self.images else []
        if self.png and "png" not in self.images:
            written += save_pngs([(fig, path.with_suffix(".png")) for fig, path in pairs])
        self.written.extend(p.name for p in written)

    def write_pages(self, pages: Mapping[str, str]) -> None:
        """``name``.html from whole HTML pages (several figures on one page, coloured text), atomically."""
        if self.folder is not None:
            from interp.runs import atomic_write_text

            for name, text in pages.items():
                atomic_write_text(self.folder / f"{name}.html", text)
                self.written.append(f"{name}.html")

    def write_json(self, name: str, obj: Any) -> None:
        """``name``.json, atomically."""
        if self.folder is not None:
            from interp.runs import atomic_write_json

            atomic_write_json(self.folder / f"{name}.json", obj)
            self.written.append(f"{name}.json")

    def save(self, experiment: Any, result: Any, lm: Any, config: Any, started: float) -> dict:
        """Write the experiment's tables, figures, pages and run.json (call on rank 0). Returns run.json's content."""
        from interp.analyses.checks import as_records, check_all
        from interp.distributed import world
        from interp.runs import run_info

        for name, df in experiment.tables(result).items():
            self.write_table(name, df)
        self.write_figures(experiment.figures(result))
        self.write_pages(experiment.pages(result))
        if experiment.images is not None:  # the figures of its pages, as pictures
            self.write_images(experiment.images(result))
        info = run_info(
            lm, settings={**config.settings(), **self.notes, "model": lm.name}, started=started, ranks=world().size
        )
        info["launch"] = {**info.get("launch", {}), **self.launch}
        info["command"] = self.command
        _sum_times(self, info)
        info["summary"] = experiment.summary(result)
        info["checks"] = as_records(check_all(result))
        info.update(experiment.record(result))
        self.write_json("run", info)
        return info


def _sum_times(store: Store, info: dict) -> None:
    """run.json's ``wall_seconds``: this invocation plus the earlier ones that kept work in the
    folder (a resumed run's total); ``parts`` counts them (1: run in one go)."""
    from interp.runs import add_part_time, part_times

    if store.folder is None or "wall_seconds" not in info:
        return
    earlier = part_times(store.folder, forget=store.fresh)
    info["wall_seconds_this_part"] = info["wall_seconds"]
    info["wall_seconds"] = round(info["wall_seconds"] + sum(earlier), 2)
    info["parts"] = len(earlier) + 1
    add_part_time(store.folder, info["wall_seconds_this_part"])
