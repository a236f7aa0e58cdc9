"""GGUF files as models (interp._gguf, interp._embedded) on tiny GGUFs written here, no downloads.

A local ``.gguf`` loads through `load_model(path)` (converted once, cached by content hash) with
the logits transformers' own GGUF loader gives; unsupported architectures, truncated or corrupt
parts of a split GGUF and a conversion killed half-way all leave nothing in the cache that loads.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import GGUF_HEADS as _HEADS
from helpers import GGUF_KV as _KV
from helpers import GGUF_LAYERS as _LAYERS
from helpers import write_gguf

from interp.errors import InterpError


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("INTERP_CACHE", str(folder))
    return folder


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_local_gguf_loads_with_transformers_logits_and_converts_once(tiny_gguf, cache, tmp_path):
    from transformers import AutoModelForCausalLM

    from interp.models import load_model

    lm = load_model(str(tiny_gguf))
    assert lm.name == "tiny.gguf" and lm.arch.model_type == "llama"
    assert (lm.arch.n_layers, lm.arch.n_heads, lm.arch.n_kv_heads) == (_LAYERS, _HEADS, _KV)
    ids = lm.encode("the cat sat on the mat")
    reference = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    torch.testing.assert_close(lm.forward(ids), expected, rtol=0, atol=1e-5)
    (converted,) = _entries(cache)  # one complete folder, no temporary left over
    assert converted.startswith("gguf-") and not converted.startswith(".")

    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    stamp = (cache / converted / "model.safetensors").stat().st_mtime_ns
    again = load_model(str(copy))  # same content: the same conversion, not redone
    assert _entries(cache) == [converted]
    assert (cache / converted / "model.safetensors").stat().st_mtime_ns == stamp
    torch.testing.assert_close(again.forward(ids), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "arch, says",
    [
        ("rwkv6", "transformers' GGUF loader cannot read"),  # not in transformers' GGUF table
        ("mamba", "interp has no hook adapter"),  # transformers reads it; no family row in interp
        ("bloom", "ALiBi"),  # a family interp refuses, with its reason
    ],
)
def test_unsupported_architecture_is_one_error_and_writes_nothing(arch, says, cache, tmp_path):
    from interp.models import load_model

    path = write_gguf(tmp_path / f"{arch}.gguf", arch, tensors=False)
    with pytest.raises(InterpError, match=says) as err:
        load_model(str(path))
    assert arch in str(err.value) and "\n" not in str(err.value)
    assert _entries(cache) == []


def test_not_a_gguf_and_missing_file_are_errors(cache, tmp_path):
    from interp.models import load_model

    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model")
    with pytest.raises(InterpError, match="cannot read .* as a GGUF file"):
        load_model(str(fake))
    with pytest.raises(InterpError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    assert _entries(cache) == []


def test_conversion_killed_half_way_leaves_nothing_that_loads(tiny_gguf, cache):
    """SIGKILL right after the weights are written (before the tokenizer and the rename)."""
    from interp._gguf import is_converted
    from interp.models import load_model

    script = textwrap.dedent(
        f"""
        import os, signal
        from transformers import PreTrainedModel
        save = PreTrainedModel.save_pretrained
        def save_then_die(self, *args, **kwargs):
            save(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        PreTrainedModel.save_pretrained = save_then_die
        from interp.models import load_model
        load_model({str(tiny_gguf)!r})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "INTERP_CACHE": str(cache)}, capture_output=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    left = _entries(cache)
    assert left and all(name.startswith(".") for name in left)  # only the hidden temporary folder
    assert not any(is_converted(cache / name.split(".tmp-")[0].lstrip(".")) for name in left)
    assert any((cache / name / "model.safetensors").is_file() for name in left)  # it was killed mid-way
    lm = load_model(str(tiny_gguf))  # converts afresh, into the real name
    assert lm.arch.n_layers == _LAYERS
    assert [n for n in _entries(cache) if not n.startswith(".")] == [n.split(".tmp-")[0].lstrip(".") for n in left]


# --------------------------------------------------------------------------------------------
# Embedded models split over several packages (the Gemma 3 270M layout), on the tiny GGUF
# --------------------------------------------------------------------------------------------


@pytest.fixture
def split_model(tiny_gguf, tmp_path, monkeypatch):
    """An embedded-model row whose GGUF is the tiny one cut into 3 'packages' under tmp_path."""
    import hashlib

    import interp._embedded as embedded

    blob = tiny_gguf.read_bytes()
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    parts = []
    for i in range(3):
        chunk = blob[cuts[i] : cuts[i + 1]]
        folder = tmp_path / "site" / f"tiny_part{i + 1}" / "data"
        folder.mkdir(parents=True)
        (folder / f"tiny.gguf.part{i:02d}").write_bytes(chunk)
        parts.append(
            embedded.GgufPart(
                f"tiny-part{i + 1}==1.0",
                f"tiny_part{i + 1}",
                f"data/tiny.gguf.part{i:02d}",
                len(chunk),
                hashlib.sha256(chunk).hexdigest(),
            )
        )
    row = dataclasses.replace(
        embedded._GEMMA3_270M,
        name="tiny-split",
        aliases=("tiny-split",),
        cache_subdir="tiny-split-f32",
        gguf_name="tiny.gguf",
        parts=tuple(parts),
        sha256=hashlib.sha256(blob).hexdigest(),
        terms=None,
        notice=None,
    )
    monkeypatch.setattr(embedded, "_package_folder", lambda module: tmp_path / "site" / module)
    return row, tmp_path / "site"


def test_split_gguf_assembles_and_loads(split_model, cache):
    from interp._embedded import embedded_weights_dir

    row, _ = split_model
    folder = embedded_weights_dir(row)
    assert folder == cache / "tiny-split-f32" and _entries(cache) == ["tiny-split-f32"]
    assert not (folder / "tiny.gguf").exists()  # the assembled copy is not kept


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "missing"])
def test_damaged_part_names_the_package_to_reinstall(split_model, cache, damage):
    from interp._embedded import embedded_weights_dir

    row, site = split_model
    part = site / "tiny_part2" / "data" / "tiny.gguf.part01"
    data = part.read_bytes()
    if damage == "truncated":
        part.write_bytes(data[:-100])
    elif damage == "corrupt":
        part.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    else:
        part.unlink()
    with pytest.raises(InterpError, match="tiny-part2==1.0") as err:
        embedded_weights_dir(row)
    assert {"truncated": "truncated", "corrupt": "corrupt", "missing": "not installed"}[damage] in str(err.value)
    assert _entries(cache) == []  # nothing left: no temporary, no converted folder
