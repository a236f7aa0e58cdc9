"""benchmarks/attn_stats.py and benchmarks/gpu_check.sh: the logic that needs no GPU.

The numbers here are made up in memory to check the rendering and the block replacement;
nothing is written to benchmarks/RESULTS.md (the real runs are `make bench` and
`bash benchmarks/gpu_check.sh`; `bash benchmarks/gpu_check.sh --dry-run` runs the whole
script on CPU with tiny sizes against a scratch copy).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("attn_stats_bench", ROOT / "benchmarks" / "attn_stats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_lengths_and_shapes_parse(bench) -> None:
    assert bench.parse_lengths("4k,16k, 32k,64k,128k") == [4096, 16384, 32768, 65536, 131072]
    assert bench.parse_lengths("100,2k") == [100, 2048]
    assert bench.parse_shapes("32/8/128,9/3/64") == [(32, 8, 128), (9, 3, 64)]
    with pytest.raises(SystemExit, match="multiple of kv_head"):
        bench.parse_shapes("32/5/128")
    with pytest.raises(SystemExit, match="positive"):
        bench.parse_lengths("0")


def test_write_section_replaces_only_its_block(bench, tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n<!-- attn_stats:begin -->\ncpu table\n<!-- attn_stats:end -->\n\nreading\n")
    bench.write_section("gpu table v1\n", path, "attn_stats_gpu")
    bench.write_section("gpu table v2\n", path, "attn_stats_gpu")  # replaced, not appended twice
    text = path.read_text()
    assert text.count("<!-- attn_stats_gpu:begin -->") == 1 and "gpu table v2" in text and "v1" not in text
    assert "cpu table" in text and "reading" in text
    bench.write_section("cpu table v2\n", path, "attn_stats")
    text = path.read_text()
    assert "cpu table v2" in text and "gpu table v2" in text and text.index("cpu table v2") < text.index("reading")


def test_render_reports_the_triton_flash_ratio_at_every_length(bench) -> None:
    ok = lambda t, mem: {"status": "ok", "time": t, "first": 3 * t, "peak_extra": mem * 2**20}  # noqa: E731
    rows = [
        ((32, 8, 128), 4096, {"triton": ok(0.02, 40), "sdpa": ok(0.01, 8), "eager": ok(0.5, 9000)}),
        (
            (32, 8, 128),
            131072,
            {"triton": ok(3.0, 900), "sdpa": ok(1.0, 200), "eager": {"status": "skipped: needs ~1 GiB"}},
        ),
    ]
    rows = [((*shape, t), res) for shape, t, res in rows]
    run = dict(device="cpu", dtype="float16", lengths=[4096, 131072], load=((1.0,), (1.0,)), elapsed=60.0,
               threads=1, interpreter=True, argv=["--lengths", "4k,128k", "--note", "hidden"])  # fmt: skip
    text = bench.render(rows, ["triton", "sdpa", "eager"], {}, run, title="## t", notes=["a note"])
    assert "| 32/8/128 | 4096 | 0.0200 | 0.0100 | 2.00 | 40 | 8 | 0.5000 | 9,000 |" in text
    assert "| 32/8/128 | 131072 | 3.0000 | 1.0000 | 3.00 | 900 | 200 | skipped | - |" in text
    assert "skipped: needs ~1 GiB" in text and "a note" in text
    assert "--lengths 4k,128k" in text and "hidden" not in text  # where it is written is not part of the command


def test_gpu_check_script_parses_and_refuses_without_cuda(tmp_path: Path) -> None:
    """bash -n, and without CUDA (and without --dry-run) it stops at once with a message."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would start the real run")
    env = {"PATH": "/usr/bin:/bin", "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable, "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device" in done.stdout and "--dry-run" in done.stdout
