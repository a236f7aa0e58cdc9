"""Head detectors: expected keys against brute-force definitions, random sequences, row scores, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.heads import (
    HeadConfig,
    combine,
    detector_targets,
    expected_keys,
    kind_sums,
    parse_kinds,
    row_scores,
)
from interp.datasets.random_tokens import repeated_random_tokens
from interp.errors import InterpError


def _brute(ids, kind, exclude_current=True):
    out = []
    for i in range(len(ids)):
        if kind == "previous":
            out.append({i - 1} if i else set())
        elif kind == "duplicate":
            out.append({j for j in range(i) if ids[j] == ids[i]})
        else:
            out.append({j + 1 for j in range(i) if ids[j] == ids[i] and not (exclude_current and j + 1 == i)})
    return out


@pytest.mark.parametrize("kind", ["previous", "duplicate", "induction"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_keys_match_brute_force(kind, seed):
    ids = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(seed)).tolist()
    got = expected_keys(ids, kind, max_targets=64)
    want = _brute(ids, kind)
    assert [set(r[r >= 0].tolist()) for r in got] == want
    assert any(len(w) > 1 for w in want) or kind == "previous"


def test_max_targets_keeps_the_most_recent():
    ids = [7, 7, 7, 7, 7]
    got = expected_keys(ids, "duplicate", max_targets=2)
    assert got[4].tolist() == [3, 2] and got[1].tolist() == [0, -1] and got[0].tolist() == [-1, -1]


def test_repeated_random_tokens_structure():
    ids = repeated_random_tokens(3, 10, vocab=50, seed=1, first=0, avoid=[0, 1, 2])
    assert ids.shape == (3, 21) and (ids[:, 0] == 0).all()
    assert torch.equal(ids[:, 1:11], ids[:, 11:])
    for row in ids:
        assert len(set(row[1:11].tolist())) == 10 and not {0, 1, 2} & set(row[1:].tolist())
    # on them, induction targets are exactly i - length + 1 in the second copy, none in the first
    t = expected_keys(ids[0], "induction")
    assert (t[:11] == -1).all() and t[11:, 0].tolist() == list(range(2, 12))
    assert (t[11:, 1:] == -1).all()


def test_row_scores_sum_filled_slots():
    mass = torch.tensor([[0.2, 0.3, float("nan")], [float("nan")] * 3, [0.0, float("nan"), float("nan")]])
    got = row_scores(mass)
    assert got[0].item() == pytest.approx(0.5) and got[1].isnan() and got[2].item() == 0.0


def test_bad_input():
    with pytest.raises(InterpError, match="unknown head kind"):
        parse_kinds("induction,bogus")
    with pytest.raises(InterpError, match="unknown head kind"):
        parse_kinds("")
    assert parse_kinds("induction, previous") == ("previous", "induction")
    with pytest.raises(InterpError, match="empty"):
        HeadConfig(texts=())
    with pytest.raises(InterpError, match="empty"):
        HeadConfig(texts=("ok", "  "))
    with pytest.raises(InterpError, match="nothing to score"):
        HeadConfig(random=False)
    with pytest.raises(InterpError, match="distinct tokens"):
        repeated_random_tokens(1, 10, vocab=8)


def test_config_normalises_kinds_and_serialises():
    cfg = HeadConfig(kinds=("induction", "previous"), layers=(3, 1), texts=("a b", "c"))
    assert cfg.kinds == ("previous", "induction") and cfg.layers == (3, 1) and cfg.sources == ("random", "text")
    assert cfg.settings()["texts"] == "2 texts, 4 chars" and cfg.settings()["kinds"] == ["previous", "induction"]
    with pytest.raises(InterpError, match="n_seqs must be an int >= 1"):
        HeadConfig(n_seqs=0)


def test_detector_targets_concatenate_kinds_and_count_rows():
    ids = torch.tensor([[5, 6, 5, 6], [1, 2, 3, 4]])
    targets, widths, rows = detector_targets(ids, ("previous", "induction"), max_targets=2)
    assert targets.shape == (2, 4, 3) and widths == (1, 2)
    assert targets[0, :, 0].tolist() == [-1, 0, 1, 2]  # previous token
    assert targets[0, 2, 1:].tolist() == [1, -1] and targets[0, 3, 1:].tolist() == [
        2,
        -1,
    ]  # token after the earlier copy
    assert rows == (2 * 3, 2)  # previous: every row but the first; induction: the two repeats of sequence 0


def test_kind_sums_and_combine_average_over_rows_with_keys():
    # [batch 1, head 2, pos 3, slots 1 (previous) + 2 (induction)]; NaN = empty slot
    nan = float("nan")
    target = torch.tensor(
        [[[[nan, nan, nan], [0.5, 0.2, nan], [0.25, 0.1, 0.3]], [[nan, nan, nan], [1.0, nan, nan], [0.0, nan, nan]]]]
    )
    sums = kind_sums(target, (1, 2))
    assert np.allclose(sums, [[0.75, 1.0], [0.6, 0.0]])  # [kind, head]
    cfg = HeadConfig(kinds=("previous", "induction"), texts=("x",))
    rec = {"sums": [sums.tolist()], "rows": [2, 2]}  # one layer
    result = combine(cfg, "m", (4,), 2, {"random": [rec], "text": [rec, rec]})
    assert result.sources == ("random", "text") and result.n_rows.tolist() == [[2, 2], [4, 4]]
    assert np.allclose(result.grid("previous"), [[0.375, 0.5]]) and np.allclose(
        result.grid("induction", "text"), [[0.3, 0.0]]
    )
    assert result.top("previous", 1) == [(4, 1, 0.5)]
    df = result.to_dataframe()
    assert len(df) == 2 * 2 * 2 and set(df.columns) == {"source", "kind", "layer", "head", "score", "n_rows"}


def test_detector_targets_give_bos_no_expected_key():
    """Row 1's previous token is BOS in a sequence that opens with it: a sink, not content, so that
    row has no previous-token key (and is not counted); a sequence without BOS keeps it."""
    ids = torch.tensor([[2, 7, 8, 7, 8], [9, 7, 8, 7, 8]])
    targets, widths, rows = detector_targets(ids, ("previous", "duplicate", "induction"), max_targets=2, bos_id=2)
    assert targets[0, :, 0].tolist() == [-1, -1, 1, 2, 3]
    assert targets[1, :, 0].tolist() == [-1, 0, 1, 2, 3]
    assert rows == (3 + 4, 2 + 2, 2 + 2)  # duplicate/induction rows are unchanged: BOS never repeats
    assert not (targets[0] == 0).any()
