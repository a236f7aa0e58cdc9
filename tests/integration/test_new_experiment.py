"""Adding an analysis touches two files: a pure analysis module and an experiment module. Both are
written here into a temporary folder (outside the package) and the registry, the CLI, the report
and `Store` pick the experiment up with no other edit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ANALYSIS = '''
"""A toy analysis: mean entropy of every head (pure)."""
from dataclasses import dataclass
import numpy as np
import pytest
import pandas as pd
from interp.analyses import Config
from interp.errors import InterpError

@dataclass(frozen=True)
class ToyConfig(Config):
    length: int = 8  # tokens per sequence
    def validate(self) -> None:
        if self.length < 2:
            raise InterpError(f"length must be at least 2, got {self.length}")

@dataclass(frozen=True)
class ToyResult:
    entropy: np.ndarray  # [layer, head]
    def to_dataframe(self) -> pd.DataFrame:
        l, h = np.indices(self.entropy.shape)
        return pd.DataFrame({"layer": l.ravel(), "head": h.ravel(), "entropy": self.entropy.ravel()})
    def summary(self) -> dict:
        return {"max_entropy": float(self.entropy.max())}

def mean_entropy(ent) -> np.ndarray:
    return ent.double().mean(-1).numpy()
'''

EXPERIMENT = '''
"""`interp score toy`: the toy analysis on a model."""
from typing import Optional
import numpy as np
import pytest
import torch
import typer
from interp.experiments import Experiment, InReport, Store, execute, flags
from toy_analysis import ToyConfig, ToyResult, mean_entropy

def run(lm, config, store=None):
    from interp.hooks import capture
    from interp.kernels import attention_stats
    store = store or Store()
    ids = torch.arange(config.length)[None] % 90
    def one(key):
        with capture(lm, keep=("q", "k")) as cap:
            lm.forward(ids)
        ent = [mean_entropy(attention_stats(cap["q", l], cap["k", l], **lm.attention_kwargs(l)).entropy[0]).tolist()
               for l in range(lm.arch.n_layers)]
        return {"entropy": ent}
    done = store.map(["seq-0"], one, settings={**config.settings(), "model": lm.name}, what="toy")
    return ToyResult(np.asarray(done["seq-0"]["entropy"]))

def cli(model: Optional[str] = flags.model_option(), length: int = typer.Option(8, "--length"),
        out=flags.out_option("runs/toy"), fresh: bool = flags.fresh_option()) -> None:
    """Mean entropy of every head."""
    execute(EXPERIMENT, ToyConfig(length=length), model=model, out=out, fresh=fresh)

EXPERIMENT = Experiment(
    name="toy", title="Toy entropy", command=("score", "toy"), config=ToyConfig, run=run,
    tables=lambda r: {"heads": r.to_dataframe()}, figures=lambda r: {}, cli=cli,
    describe=lambda r: f"max entropy {r.entropy.max():.2f}", report=InReport(lambda quick, earlier: ToyConfig(), order=25),
)
'''


def _write(tmp_path):
    pkg = tmp_path / "exps"
    pkg.mkdir()
    (tmp_path / "toy_analysis.py").write_text(textwrap.dedent(ANALYSIS))
    (pkg / "toy.py").write_text(textwrap.dedent(EXPERIMENT))
    return pkg


@pytest.fixture
def toy_registered(tmp_path, monkeypatch):
    """The toy experiment in the registry for one test, and nothing of it left after: the report's
    `STAGES` is read from the registry when `interp.report.config` is first imported, so that
    import happens before the toy joins (else every later `ReportConfig` lists a stage 'toy'
    that the registry no longer has), and the toy's modules leave `sys.modules` afterwards."""
    import interp.experiments as experiments
    import interp.report.config  # noqa: F401  (STAGES from the package's own registry)

    pkg = _write(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(pkg)])
    yield pkg
    for name in ("interp.experiments.toy", "toy_analysis"):
        sys.modules.pop(name, None)
    vars(experiments).pop("toy", None)


def test_two_new_files_make_a_registered_experiment(toy_registered, tmp_path, tiny_lm):
    from interp.experiments import Store, registry
    from interp.report.config import STAGES

    reg = registry()
    assert "toy" in reg and reg["toy"].command == ("score", "toy")
    from interp.report.config import _experiments

    stages = _experiments()  # the report's stages, in report order
    names = list(stages)
    assert names.index("sinks") < names.index("toy") < names.index("attention") and stages["toy"].title == "Toy entropy"
    assert "toy" not in STAGES  # the default report's stages stay the package's own
    out = tmp_path / "run"
    result = reg["toy"].run(tiny_lm, reg["toy"].config(length=6), Store(out))
    # the entropy of a causal row over i+1 keys is at most log(i+1): the mean over rows is below the mean bound
    bound = np.mean([np.log(i + 1) for i in range(6)])
    assert result.entropy.shape == (tiny_lm.arch.n_layers, tiny_lm.arch.n_heads)
    assert (result.entropy <= bound + 1e-6).all() and (result.entropy > 0).all()
    log = (out / "samples.jsonl").read_text().splitlines()
    assert json.loads(log[0])["settings"]["length"] == 6 and len(log) == 2


def test_the_cli_lists_the_new_command(tmp_path):
    pkg = _write(tmp_path)
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import interp.experiments as e; "
        f"e.__path__.append({str(pkg)!r}); from interp.cli import main; sys.argv = ['interp', 'score', '--help']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "toy" in proc.stdout and "Mean entropy of every head" in proc.stdout
