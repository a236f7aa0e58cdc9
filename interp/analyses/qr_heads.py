"""Query-focused retrieval heads (QRHead, Zhang et al., EMNLP 2025).

A prompt lists documents and then a query. For a head, the query-focused retrieval score of
document c is the attention mass from the query span to the document span,

    m_c = (1 / |Q|) sum_{i in Q} sum_{j in doc c} A_ij,

i.e. the segment statistic seg_i(c) of `interp.kernels` averaged over the query rows Q. QRHead
calibrates it by subtracting the same score for a null query ("N/A" in place of the query,
same documents at the same positions): s_c = m_c - m_c^null, which removes the head's
query-independent preference for some positions. On a detection set where one document is
gold, a head's QR score is the mean over samples of s_gold; `accuracy` is how often
argmax_c s_c is the gold document. The top heads by QR score are the query-focused retrieval
heads (the paper sums their s_c to rank documents).

The paper's m_c sums over the query tokens (it scores documents, so the constant 1/|Q| does
not matter); the mean keeps scores of queries of different lengths comparable.

Data: the shipped detection set `interp/data/qr_detection.jsonl` (16 one-sentence facts, each
the gold document among 4) or a JSONL file of ``{"query", "documents": [...], "gold": int}``.
`score_qr_heads` is the driver; `build_prompt`, `read_samples` and `qr_scores` are pure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp.errors import InterpError

__all__ = ["QRSample", "QRConfig", "QRResult", "read_samples", "shipped_samples", "build_prompt", "qr_scores", "score_qr_heads"]

NULL_QUERY = "N/A"  # QRHead's null query


@dataclass(frozen=True)
class QRSample:
    """Documents, a query and the index of the document that answers it."""

    id: str
    query: str
    documents: tuple[str, ...]
    gold: int


def _parse(rows: Sequence[tuple[int, str]], where: str) -> tuple[QRSample, ...]:
    out = []
    for n, line in rows:
        at = f"{where} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(f"{at} is not JSON ({err.msg}): write one object per line") from err
        if not isinstance(row, dict) or not {"query", "documents", "gold"} <= set(row):
            raise InterpError(f'{at}: need an object with "query", "documents" and "gold"')
        docs = row["documents"]
        if not (isinstance(docs, list) and len(docs) >= 2 and all(isinstance(d, str) and d.strip() for d in docs)):
            raise InterpError(f"{at}: documents must be a list of at least 2 non-empty strings")
        if not (isinstance(row["query"], str) and row["query"].strip()):
            raise InterpError(f"{at}: query must be a non-empty string")
        g = row["gold"]
        if not (isinstance(g, int) and not isinstance(g, bool) and 0 <= g < len(docs)):
            raise InterpError(f"{at}: gold must be the index (0-{len(docs) - 1}) of the answering document, got {g!r}")
        out.append(QRSample(str(row.get("id", f"line-{n}")), row["query"], tuple(docs), g))
    if not out:
        raise InterpError(f"{where} has no samples: put one JSON object per line")
    return tuple(out)


def read_samples(path: str | Path) -> tuple[QRSample, ...]:
    """Samples from a JSONL file; errors name the line."""
    p = Path(path)
    if not p.is_file():
        raise InterpError(f"samples file {p} not found: pass a JSONL file of {{\"query\", \"documents\", \"gold\"}} lines")
    lines = [(n, ln) for n, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
    return _parse(lines, str(p))


def shipped_samples() -> tuple[QRSample, ...]:
    raw = resources.files("interp").joinpath("data/qr_detection.jsonl").read_text(encoding="utf-8")
    return _parse([(n, ln) for n, ln in enumerate(raw.splitlines(), 1) if ln.strip()], "qr_detection.jsonl")


def build_prompt(tokenizer, documents: Sequence[str], query: str) -> tuple[list[int], list[int], list[int]]:
    """Token ids of "Documents:\\n[1] ...\\n...\\nQuery: {query}\\n", with the spans labelled.

    Pieces are tokenised one by one and joined, so span boundaries are exact.

    Returns:
        (ids, segment label per token: document index or -1, query row indices).
    """
    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    ids, seg = enc("Documents:\n"), []
    seg = [-1] * len(ids)
    for c, doc in enumerate(documents):
        label = enc(f"[{c + 1}] ")
        body = enc(f"{doc}\n")
        ids += label + body
        seg += [-1] * len(label) + [c] * len(body)
    pre = enc("\nQuery: ")
    ids += pre
    seg += [-1] * len(pre)
    q = enc(query)
    rows = list(range(len(ids), len(ids) + len(q)))
    ids += q
    seg += [-1] * len(q)
    tail = enc("\n")
    ids += tail
    seg += [-1] * len(tail)
    return ids, seg, rows


def qr_scores(seg_mass: Tensor) -> Tensor:
    """Mean over query rows of the mass on each document.

    Args:
        seg_mass: [head, n_rows, n_docs] seg_i(c) of the query rows.

    Returns:
        [head, n_docs] m_c.
    """
    return seg_mass.mean(1)


@dataclass(frozen=True)
class QRConfig:
    """Settings of `score_qr_heads`.

    Attributes:
        samples: detection samples; None = the shipped set.
        max_samples: only the first this many; None = all.
        calibrate: subtract the null-query score (QRHead); False = raw m_c.
        layers: layers to score; None = all.
        backend: `interp.kernels.attention_stats` backend.
    """

    samples: Optional[tuple[QRSample, ...]] = None
    max_samples: Optional[int] = None
    calibrate: bool = True  # QRHead's null-query calibration
    layers: Optional[tuple[int, ...]] = None
    backend: str = "auto"

    def validate(self) -> None:
        if self.samples is not None and not self.samples:
            raise InterpError("no samples given: pass at least one, or samples=None for the shipped detection set")
        if self.max_samples is not None and not (isinstance(self.max_samples, int) and self.max_samples >= 1):
            raise InterpError(f"max_samples must be None or an int >= 1, got {self.max_samples!r}")

    def settings(self) -> dict:
        out = asdict(self)
        s = out.pop("samples")
        out["samples"] = "shipped qr_detection.jsonl" if s is None else f"{len(s)} samples"
        return out


@dataclass(frozen=True)
class QRResult:
    """QR scores of every head.

    Attributes:
        gold_score: [sample, layer index, head] s_gold (calibrated unless config.calibrate=False).
        correct: [sample, layer index, head] argmax_c s_c == gold.
        raw_gold: [sample, layer index, head] m_gold before calibration.
    """

    config: QRConfig
    model: str
    layers: tuple[int, ...]
    n_heads: int
    sample_ids: tuple[str, ...]
    gold_score: np.ndarray
    correct: np.ndarray
    raw_gold: np.ndarray

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def scores(self) -> np.ndarray:
        """[layer index, head] QR score: mean of s_gold over samples."""
        return self.gold_score.mean(0)

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct.mean(0)

    def top(self, n: int = 5) -> list[tuple[int, int, float]]:
        g = self.scores
        order = np.argsort(-g, axis=None, kind="stable")[:n]
        return [(self.layers[i // self.n_heads], int(i % self.n_heads), float(g.flat[i])) for i in order]

    def to_dataframe(self) -> pd.DataFrame:
        """heads.csv: layer, head, qr_score, accuracy, raw_gold_mass."""
        li, hi = np.meshgrid(np.arange(len(self.layers)), np.arange(self.n_heads), indexing="ij")
        li, hi = li.ravel(), hi.ravel()
        return pd.DataFrame(
            {
                "layer": np.asarray(self.layers)[li],
                "head": hi,
                "qr_score": self.scores[li, hi],
                "accuracy": self.accuracy[li, hi],
                "raw_gold_mass": self.raw_gold.mean(0)[li, hi],
            }
        )

    def summary(self, n: int = 5) -> dict:
        acc = self.accuracy
        best = np.unravel_index(np.argmax(acc), acc.shape)
        idx = {layer: i for i, layer in enumerate(self.layers)}
        return {
            "n_samples": self.n_samples,
            "top": [[l, h, round(v, 4), float(acc[idx[l], h])] for l, h, v in self.top(n)],  # layer, head, score, accuracy
            "best_accuracy_head": [self.layers[best[0]], int(best[1]), float(acc[best])],
        }


def _doc_mass(lm, ids: list[int], seg: list[int], rows: list[int], n_docs: int, layers: Sequence[int], backend: str) -> Tensor:
    """[layer index, head, n_docs] m_c of one prompt."""
    from interp.analyses._streaming import stream_layers
    from interp.kernels import attention_stats

    index = {layer: i for i, layer in enumerate(layers)}
    out = torch.zeros(len(layers), lm.arch.n_heads, n_docs, dtype=torch.float64)
    segments = torch.tensor([seg], device=lm.device)

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        st = attention_stats(
            q, k, **lm.attention_kwargs(layer), segments=segments, n_segments=n_docs, query_rows=rows,
            columns=False, backend=backend,
        )  # fmt: skip
        out[index[layer]] = qr_scores(st.seg[0].double().cpu())

    lm.check_length(len(ids))
    stream_layers(lm, torch.tensor([ids], device=lm.device), layers, on_layer)
    return out


def score_qr_heads(lm, config: QRConfig = QRConfig()) -> QRResult:
    """QR scores of every head on a detection set (two forward passes per sample: query and null query).

    Raises:
        InterpError: bad settings or samples, layers out of range, a prompt that does not fit.
    """
    from interp.hooks import check_layers

    config.validate()
    if getattr(lm, "tokenizer", None) is None:
        raise InterpError("QR head scoring needs the model's tokenizer: load the model with interp.load_model")
    layers = check_layers(lm, config.layers)
    samples = config.samples if config.samples is not None else shipped_samples()
    samples = samples[: config.max_samples] if config.max_samples else samples
    shape = (len(samples), len(layers), lm.arch.n_heads)
    gold, correct, raw = np.zeros(shape), np.zeros(shape, bool), np.zeros(shape)
    for si, s in enumerate(samples):
        n_docs = len(s.documents)
        ids, seg, rows = build_prompt(lm.tokenizer, s.documents, s.query)
        m = _doc_mass(lm, ids, seg, rows, n_docs, layers, config.backend)
        calibrated = m
        if config.calibrate:
            ids0, seg0, rows0 = build_prompt(lm.tokenizer, s.documents, NULL_QUERY)
            calibrated = m - _doc_mass(lm, ids0, seg0, rows0, n_docs, layers, config.backend)
        gold[si] = calibrated[..., s.gold].numpy()
        raw[si] = m[..., s.gold].numpy()
        correct[si] = (calibrated.argmax(-1) == s.gold).numpy()
    return QRResult(config, lm.name, tuple(layers), lm.arch.n_heads, tuple(s.id for s in samples), gold, correct, raw)
