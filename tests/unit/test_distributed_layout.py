"""interp.distributed without a launcher: rank layout from the environment, per-rank placement,
launch-option errors."""

from __future__ import annotations

import pytest

from interp.distributed import Launch, World, parse_max_memory, rank_device, rank_max_memory, world
from interp.errors import InterpError

_DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_STEP_TASKS_PER_NODE",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in _DIST_ENV:
        monkeypatch.delenv(name, raising=False)
    yield


def test_no_launcher_is_one_process():
    assert world() == World(rank=0, size=1, local_rank=0, local_size=1)
    assert world().main and not world().distributed


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WORLD_SIZE": "2"}, "RANK is not"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "outside 0..1"),
        ({"WORLD_SIZE": "two"}, "not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR and MASTER_PORT not set"),
        ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"}, "no process group"),  # srun, no MASTER_ADDR
    ],
)
def test_bad_launch_environment(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(InterpError, match=message):
        world()


@pytest.mark.parametrize(
    "n_gpus, expected",
    [(0, "cpu"), (2, "cuda:1"), (8, "cuda:1")],
)
def test_rank_device(monkeypatch, n_gpus, expected):
    """CUDA present (as many devices as given, faked) -> cuda:LOCAL_RANK; none -> cpu."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: n_gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus)
    assert rank_device(World(rank=1, size=2, local_rank=1, local_size=2)) == expected
    if n_gpus:
        assert rank_device(World()) == "cuda:0"  # one process: the first GPU


def test_rank_device_with_more_local_ranks_than_gpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InterpError, match="LOCAL_RANK=1 but this machine has 1 CUDA devices"):
        rank_device(World(rank=1, size=2, local_rank=1, local_size=2))


def test_rank_max_memory_gives_each_rank_its_gpus():
    # 8 GPUs, 2 ranks per machine: local rank 1 owns GPUs 4..7; indices in --max-memory are the rank's
    w = World(rank=3, size=4, local_rank=1, local_size=2)
    got = rank_max_memory({0: "20GiB", 3: "10GiB", "cpu": "60GiB"}, w, n_gpus=8)
    assert got == {4: "20GiB", 7: "10GiB", "cpu": "60GiB"}
    assert rank_max_memory({0: "1GiB"}, World(), n_gpus=8) == {0: "1GiB"}  # one rank per machine: unchanged
    with pytest.raises(InterpError, match="each rank owns 4 GPUs"):
        rank_max_memory({4: "20GiB"}, w, n_gpus=8)
    with pytest.raises(InterpError, match="at most 2 processes per machine"):
        rank_max_memory({0: "1GiB"}, World(rank=2, size=3, local_rank=2, local_size=3), n_gpus=2)


def test_parse_max_memory():
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=60GiB") == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    assert parse_max_memory(None) is None
    with pytest.raises(InterpError, match="DEVICE=AMOUNT"):
        parse_max_memory("20GiB")


def test_launch_option_errors():
    with pytest.raises(InterpError, match="needs --device-map"):
        Launch(max_memory={0: "1GiB"})
    with pytest.raises(InterpError, match="unknown --engine"):
        Launch(engine="dask")
    with pytest.raises(InterpError, match="--workers is for --engine ray"):
        Launch(workers=2)
    with pytest.raises(InterpError, match="unknown --device-map"):
        Launch(device_map="everywhere")


def test_cli_hands_its_launch_options_to_the_command_and_keeps_none(monkeypatch):
    """The flags before the command word become one frozen `Launch` that reaches the model
    loading; the next command in the same process starts from the defaults (no module state)."""
    import sys

    import interp.distributed
    from interp.cli import main
    from interp.distributed import LoadOptions

    seen = []

    def rank_model(name=None, launch=Launch(), **kwargs):
        seen.append(launch)
        raise InterpError("stop before loading")

    monkeypatch.setattr(interp.distributed, "rank_model", rank_model)
    for argv in (["--dtype", "bfloat16", "--no-prepend-bos", "--strict", "info"], ["info"]):
        monkeypatch.setattr(sys, "argv", ["interp", *argv])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 2
    assert seen == [Launch(strict=True, load=LoadOptions(dtype="bfloat16", prepend_bos=False)), Launch()]


def test_cli_passes_device_map_to_from_pretrained(monkeypatch, tmp_path, capsys):
    """`interp --device-map auto --max-memory ... score sinks` loads through load_model(device_map=...)."""
    import sys

    import interp.models
    from interp.cli import main

    seen = {}

    def fake_load(name=None, **kwargs):
        seen.update(kwargs, name=name)
        raise InterpError("stop here")

    monkeypatch.setattr(interp.models, "load_model", fake_load)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "interp",
            "--device-map",
            "auto",
            "--max-memory",
            "0=2GiB,cpu=8GiB",
            "score",
            "sinks",
            "--model",
            "m",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "stop here" in capsys.readouterr().err
    assert seen == {"name": "m", "device_map": "auto", "max_memory": {0: "2GiB", "cpu": "8GiB"}}


def test_cli_passes_dtype_and_attention_implementation(monkeypatch, tmp_path, capsys):
    """`interp --dtype bfloat16 --attn-implementation eager score sinks` loads with those settings;
    an unknown dtype is a clear error before anything loads."""
    import sys

    import interp.models
    from interp.cli import main

    seen = {}

    def fake_load(name=None, **kwargs):
        seen.update(kwargs, name=name)
        raise InterpError("stop here")

    monkeypatch.setattr(interp.models, "load_model", fake_load)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "interp",
            "--dtype",
            "bfloat16",
            "--attn-implementation",
            "eager",
            "score",
            "sinks",
            "--model",
            "m",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "stop here" in capsys.readouterr().err
    assert seen["dtype"] == "bfloat16" and seen["attn_implementation"] == "eager" and seen["name"] == "m"
    seen.clear()
    monkeypatch.setattr(sys, "argv", ["interp", "--dtype", "float8", "score", "sinks", "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "unknown --dtype 'float8'" in capsys.readouterr().err and not seen
