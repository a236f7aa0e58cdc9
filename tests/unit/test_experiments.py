"""The experiment layer: shared flag parsers, the registry, the store and the config convention."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from interp.errors import InterpError
from interp.experiments import Store, registry
from interp.experiments.flags import check_backend, parse_heads, parse_layers


def test_parse_layers_ranges_and_errors():
    assert parse_layers("0-3,10") == (0, 1, 2, 3, 10)
    assert parse_layers(" 5 , 2-3,5") == (5, 2, 3)  # order kept, repeats dropped
    assert parse_layers(None) is None
    for bad, match in [("3-1", "backwards"), ("a", "ranges like"), (",", "empty"), ("1-", "ranges like")]:
        with pytest.raises(InterpError, match=match):
            parse_layers(bad)


def test_parse_heads_and_backend():
    assert parse_heads("12.3,20.1") == ((12, 3), (20, 1))
    with pytest.raises(InterpError, match="LAYER.HEAD"):
        parse_heads("12")
    assert check_backend("torch") == "torch"
    with pytest.raises(InterpError, match="--model-backend tl"):
        check_backend("tl")
    with pytest.raises(InterpError, match="choose from"):
        check_backend("cuda")


def test_registry_names_commands_and_config_convention():
    reg = registry()
    assert "sinks" in reg and reg["sinks"].command == ("score", "sinks")
    commands = [e.command for e in reg.values()]
    assert len(commands) == len(set(commands))
    for exp in reg.values():
        assert dataclasses.is_dataclass(exp.config) and exp.config.__dataclass_params__.frozen
        if (
            exp.report is not None and exp.report.needs
        ):  # takes other stages' results: test_attention_views_from_earlier_results
            assert set(exp.report.needs) < set(reg)
            continue
        cfg = exp.report.config(True, {}) if exp.report is not None else exp.config()
        assert isinstance(cfg, exp.config)
        json.dumps(cfg.settings())  # one serialiser, JSON-able


def test_attention_views_from_earlier_results():
    from types import SimpleNamespace

    import numpy as np

    from interp.analyses.patching import PatchResult
    from interp.experiments.attention import REPEAT_TEXT, ViewConfig, report_config

    scores = np.full((4, 3), np.nan)
    scores[2, 1], scores[3, 0] = -0.9, 0.4
    patching = PatchResult(task="ioi", target="head_out", method="activation", metric="score", axes=("layer", "head"),
                           scores=scores, prompts=("When Mary and John went", "other"))  # fmt: skip
    found = SimpleNamespace(top=lambda k: [(5, 2, 0.7)], scores=np.zeros((8, 4)))
    cfg = report_config(True, {"retrieval": found, "patching": patching})
    assert cfg.views == (
        ("retrieval", 5, 2, REPEAT_TEXT * 2, "Top retrieval head on repeated text"),
        ("patching", 2, 1, "When Mary and John went", "Top IOI patching head on a clean prompt"),  # largest |score|
    )
    none_scored = SimpleNamespace(top=lambda k: [], scores=np.zeros((8, 4)))
    assert report_config(True, {"retrieval": none_scored, "patching": patching}).views[0][1:3] == (4, 0)  # middle layer
    json.dumps(cfg.settings())
    with pytest.raises(InterpError, match="no views"):
        ViewConfig()
    with pytest.raises(InterpError, match="names a file"):
        ViewConfig(views=(("a b", 0, 0, "text", "c"),))


def test_store_without_folder_keeps_nothing_and_with_folder_resumes(tmp_path):
    calls = []

    def compute(key):
        calls.append(key)
        return {"v": len(key)}

    assert Store().map(["a", "bb"], compute, settings={"x": 1}, what="units") == {"a": {"v": 1}, "bb": {"v": 2}}
    store = Store(tmp_path / "run")
    store.map(["a", "bb"], compute, settings={"x": 1}, what="units")
    calls.clear()
    again = Store(tmp_path / "run").map(["a", "bb", "ccc"], compute, settings={"x": 1}, what="units")
    assert calls == ["ccc"] and again["bb"]["v"] == 2
    with pytest.raises(InterpError, match="other settings"):
        Store(tmp_path / "run").map(["a"], compute, settings={"x": 2}, what="units")
    assert Store(tmp_path / "run", fresh=True).map(["a"], compute, settings={"x": 2}, what="units") == {"a": {"v": 1}}
    store = Store(tmp_path / "t")
    store.write_table("heads", pd.DataFrame({"a": [1]}))
    assert pd.read_csv(tmp_path / "t" / "heads.csv").a.tolist() == [1] and store.written == ["heads.csv"]


def test_store_rejects_a_file_as_folder(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(InterpError, match="is a file"):
        Store(f)


def test_public_api_is_type_checked_under_pytest():
    """pyproject's addopts turn on beartype + jaxtyping for all of `interp`: a wrong shape or type
    at a public function fails inside the test that makes the call."""
    import torch
    from jaxtyping import TypeCheckError

    from interp.analyses.sinks import first_token_mass
    from interp.kernels import attention_stats

    with pytest.raises(TypeCheckError):
        first_token_mass("not a tensor")
    with pytest.raises(TypeCheckError):
        attention_stats(torch.randn(2, 8, 4), torch.randn(1, 2, 8, 4), scale=1.0)  # q lacks the batch axis


def test_model_backend_is_a_launch_option_with_a_clear_error():
    from interp.distributed import Launch, LoadOptions

    assert LoadOptions(backend="tl").kwargs() == {"backend": "tl"}  # what rank_model hands load_model
    assert LoadOptions().kwargs() == {} and Launch().load == LoadOptions()
    with pytest.raises(InterpError, match="--model-backend"):
        LoadOptions(backend="xx")
    with pytest.raises(InterpError, match="--dtype"):
        LoadOptions(dtype="float8")


def test_report_hands_a_stage_only_the_results_it_names():
    from typecheck import unchecked

    from interp.experiments import Experiment, InReport
    from interp.report import ReportConfig
    from interp.report.run import _run_experiment

    seen = {}

    def config(quick, earlier):
        seen.update(earlier)
        return "cfg"

    exp = Experiment(
        name="toy", title="Toy", command=("score", "toy"), config=object, run=lambda lm, cfg, store: {"ran": cfg},
        tables=lambda r: {}, figures=lambda r: {}, describe=lambda r: "found", cli=lambda: None,
        summary=lambda r: r, report=InReport(config, needs=("retrieval",), uses=("heads", "absent")),
    )  # fmt: skip
    ctx = {"configs": {}, "results": {"retrieval": 1, "heads": 2, "sinks": 3}}
    out = unchecked(_run_experiment)(exp, None, ReportConfig(quick=True), None, ctx)  # no model: the runner is fake
    assert seen == {"retrieval": 1, "heads": 2} and ctx["results"]["toy"] == {"ran": "cfg"} and out.summary == "found"
