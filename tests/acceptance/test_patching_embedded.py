"""Patching on the embedded SmolLM2-135M-Instruct: the tasks work, patching finds heads that
restore the answer, attribution tracks activation patching, and the CLI writes its files."""

from __future__ import annotations

import numpy as np
import pytest

from interp.analyses.patching import top_heads
from interp.datasets.colored_objects import ColoredObjectsConfig, colored_objects
from interp.datasets.ioi import IOIConfig, ioi
from interp.experiments.patching import patch_task, task_baseline

pytestmark = pytest.mark.slow


def test_tasks_are_solved_before_patching(embedded):
    b, _, _ = task_baseline(embedded, ioi(embedded.tokenizer, IOIConfig(n=8, seed=11)))
    assert b.clean_accuracy >= 0.9  # regression guard (one run): the 135M model solves IOI
    assert b.clean_logit_diff > b.corrupt_logit_diff + 2.0  # the ABC corruption removes the preference
    c, _, _ = task_baseline(embedded, colored_objects(embedded.tokenizer, ColoredObjectsConfig(n=8, seed=11)))
    assert c.clean_logit_diff > c.corrupt_logit_diff  # weaker task for a 135M model, but above chance


def test_ioi_heads_restore_the_answer_and_attribution_tracks_them(embedded):
    batch = ioi(embedded.tokenizer, IOIConfig(n=4, seed=2))
    res = patch_task(
        embedded, batch, target="head_out", method="attribution", compare=True, layers=[22, 23, 24], progress=False
    )
    act = res.activation
    best = top_heads(act, 1, signed=True)[0]
    assert (
        best[2] > 0.2
    )  # regression guard (one run): one clean head output brings back a fifth of the logit difference
    assert (
        np.isfinite(res.correlation) and res.correlation > 0.8
    )  # regression guard (one run): attribution tracks activation
    assert np.isnan(act.scores[0]).all() and np.isfinite(act.scores[22:25]).all()


def test_residual_by_position_moves_from_names_to_the_end(embedded):
    batch = ioi(embedded.tokenizer, IOIConfig(n=4, seed=3))
    res = patch_task(embedded, batch, target="resid_pre", layers=[0, 29], progress=False)
    first, last = res.scores[0], res.scores[29]
    names = {int(batch.roles[r][0]) for r in ("IO", "S1", "S2")} | {int(batch.roles[r][1]) for r in ("IO", "S1", "S2")}
    assert int(np.argmax(first)) in names  # at layer 0 the information sits at the names
    same = (batch.clean == batch.corrupt).all(0).numpy()
    assert np.abs(first[same]).max() < 1e-5  # positions whose tokens agree carry nothing at layer 0
    assert (
        int(np.argmax(last)) == batch.n_pos - 1 and last[-1] > 0.8
    )  # regression guard (one run): at the top it has moved to the end
