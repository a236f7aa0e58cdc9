"""`interp report`: the shared quick run writes every stage's tables and figures and one offline
page; bad input fails with a clear message before any long work starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typecheck import unchecked

from interp.errors import InterpError
from interp.report import STAGES, ReportConfig, run_report


def _cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "interp.cli", "report", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# ---------------------------------------------------------------------------------------------
# the shared quick run (one `interp report --quick`, see tests/conftest.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_writes_every_stage_and_one_offline_page(quick_report):
    from plotly.offline import get_plotlyjs

    out, proc, seconds = quick_report
    index = out / "index.html"
    assert proc.stdout.strip().splitlines()[-1] == str(index)
    text = index.read_text(encoding="utf-8")
    # self-contained: plotly.js inlined exactly once, no script from the network
    assert text.count(get_plotlyjs()[:300]) == 1
    assert not re.search(r"<script[^>]+src=", text)
    # progress: one numbered header per stage, then the closing line
    for i in range(1, len(STAGES) + 1):
        assert re.search(rf"{i}/{len(STAGES)} \S", proc.stderr), f"no progress header for stage {i}"
    assert "report written" in proc.stderr

    info = json.loads((out / "run.json").read_text())
    assert [s["name"] for s in info["stages"]] == list(STAGES)
    assert info["settings"]["report"]["quick"] is True
    for s in info["stages"]:
        assert s["summary"].strip() and s["seconds"] > 0
        assert f'<section id="{s["name"]}">' in text

    # every figure page under DIR/<stage>/ is embedded in the index, and every link resolves
    pages = sorted(out.glob("*/*.html"))
    assert len(pages) == text.count('class="figure"') >= len(STAGES)
    links = [
        h for block in re.findall(r'<p class="links">(.*?)</p>', text) for h in re.findall(r'href="([^"]+)"', block)
    ]
    assert {h.split("/")[0] for h in links} == set(STAGES)  # every stage links its files
    for href in links:
        assert (out / href).is_file(), f"index.html links a missing file: {href}"
    for page in pages:
        assert 'src="../plotly.min.js"' in page.read_text(encoding="utf-8")
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    for stage in STAGES:  # every table has rows, not only a header
        for t in (out / stage).glob("*.csv"):
            assert len(pd.read_csv(t)) > 0, f"{t} has a header and no rows"
    for stage in ("retrieval", "sinks", "preplan", "patching"):
        assert list((out / stage).glob("*.csv")), f"{stage} wrote no table"
    assert 4.5e6 < index.stat().st_size < 40e6
    print(f"\nquick report: {seconds:.0f} s, index.html {index.stat().st_size / 1e6:.1f} MB, {len(pages)} figures")


@pytest.mark.slow
def test_report_tables_agree_with_the_page(quick_report):
    out, _, _ = quick_report
    info = json.loads((out / "run.json").read_text())
    arch = info["arch"]
    n_heads_total = arch["n_layers"] * arch["n_heads"]
    heads = pd.read_csv(out / "sinks" / "heads.csv")
    assert len(heads) == n_heads_total and heads[["layer", "head"]].drop_duplicates().shape[0] == n_heads_total
    # the page's sink rate is the mean of the per-head rates in the table (same texts per head)
    rate = heads["sink_rate_pct"].mean()
    summary = next(s["summary"] for s in info["stages"] if s["name"] == "sinks")
    assert f"{rate:.1f}%" in summary
    tokens = pd.read_csv(out / "preplan" / "tokens.csv", keep_default_na=False)
    summary = next(s["summary"] for s in info["stages"] if s["name"] == "preplan")
    assert f"{len(tokens)} response tokens" in summary
    assert f"{int(tokens['anchor'].sum())} anchor tokens" in summary


# ---------------------------------------------------------------------------------------------
# bad input: clear errors before any long work
# ---------------------------------------------------------------------------------------------


def test_out_folder_that_is_a_file(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("not a folder")
    cache = tmp_path / "cache"  # an empty model cache: loading the model would convert into it
    proc = _cli("--out", str(target), env={"INTERP_CACHE": str(cache)})
    assert proc.returncode == 2, proc.stderr
    assert "is a file" in proc.stderr and "--out" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not cache.exists() or not any(cache.iterdir())  # no model was loaded
    assert not re.search(r"\b1/\d+ ", proc.stderr)  # no stage started
    assert target.read_text() == "not a folder"


def test_out_folder_not_writable(tmp_path):
    if os.geteuid() == 0:  # permissions do not stop root: use a file system no one can write
        if not Path("/sys").is_dir() or _writable("/sys"):
            pytest.skip("running as root with no unwritable folder to test against")
        target = Path("/sys/interp-report-test")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "report"
    proc = _cli("--out", str(target))
    assert proc.returncode == 2, proc.stderr
    assert "not writable" in proc.stderr and "--out" in proc.stderr
    assert "Traceback" not in proc.stderr


def _writable(folder: str) -> bool:
    try:
        os.mkdir(os.path.join(folder, f"interp-probe-{os.getpid()}"))
    except OSError:
        return False
    os.rmdir(os.path.join(folder, f"interp-probe-{os.getpid()}"))
    return True


def test_model_without_adapter_fails_before_loading(tmp_path):
    from transformers import OPTConfig

    model_dir = tmp_path / "opt"
    OPTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64, vocab_size=100).save_pretrained(
        model_dir
    )  # a config alone: the check must not need weights
    out = tmp_path / "out"
    proc = _cli("--model", str(model_dir), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "no hook adapter for model type 'opt'" in proc.stderr and "_HF_LAYOUTS" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "plotly.min.js").exists() and not (out / "index.html").exists()


def test_library_checks_model_and_settings_first(tmp_path):
    no_adapter = SimpleNamespace(name="bare", adapter=None, arch=None, tokenizer=object())
    with pytest.raises(InterpError, match="no hook adapter"):
        unchecked(run_report)(no_adapter, tmp_path / "a", ReportConfig(stages=("preplan",)))  # as in a user's process
    assert list((tmp_path / "a").iterdir()) == []  # nothing written
    with pytest.raises(InterpError, match="unknown report stages"):
        ReportConfig(stages=("retrieval", "bogus"))
    with pytest.raises(InterpError, match="include both"):
        ReportConfig(stages=("attention", "retrieval"))


def test_failed_stage_fails_the_run_and_leaves_no_page(tmp_path, monkeypatch, embedded):
    import dataclasses

    import interp.experiments.preplan as preplan

    def broken(lm, cfg, store):
        raise InterpError("boom")

    monkeypatch.setattr(preplan, "EXPERIMENT", dataclasses.replace(preplan.EXPERIMENT, run=broken))
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("an older report")
    with pytest.raises(InterpError, match="report stage 'preplan' failed: boom"):
        run_report(embedded, out, ReportConfig(stages=("preplan",)))
    assert not (out / "index.html").exists()  # no complete-looking page from an earlier run either
