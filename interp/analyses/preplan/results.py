"""The preplan analysis's results: one prompt (`PreplanResult`) and every prompt of a run (`PreplanRun`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import pandas as pd

from interp.analyses.checks import Check, as_records, at_least, at_most
from interp.analyses.preplan.config import PreplanConfig
from interp.analyses.preplan.findings import PreplanFindings

__all__ = ["PreplanResult", "PreplanRun"]


@dataclass(frozen=True, eq=False)
class PreplanResult(PreplanFindings):
    """Preplan and anchor tokens of one prompt + response: its `PreplanFindings` (every field of
    which it has) and what they were found in.

    Arrays over the response are [resp] (response index r sits at absolute position
    ``n_prompt + r``); head arrays are [layer, head] over ``layers``.

    Attributes:
        config: the settings used.
        model: the model's name.
        prompt, response: the texts; ``generated`` when the response is the model's own.
        n_prompt: prompt length P in tokens.
        tokens: [resp] the response's token strings; ``token_ids`` [resp] their ids.
        layers: the chosen layers (the head arrays' first axis).
        prompt_tokens: the prompt's token strings (for the page).
    """

    config: PreplanConfig
    model: str
    prompt: str
    response: str
    generated: bool
    n_prompt: int
    tokens: tuple[str, ...]
    token_ids: np.ndarray
    layers: tuple[int, ...]
    prompt_tokens: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def found(cls, findings: PreplanFindings, **context) -> PreplanResult:
        """The result of ``findings`` in their ``context`` (every field of `PreplanResult` that is
        not a finding: config, model, prompt, response, generated, n_prompt, tokens, token_ids,
        layers, optionally prompt_tokens)."""
        return cls(**{f.name: getattr(findings, f.name) for f in fields(PreplanFindings)}, **context)

    @property
    def positions(self) -> np.ndarray:
        """[resp] absolute position of each response token."""
        return self.n_prompt + np.arange(len(self.tokens))

    @property
    def n_local(self) -> int:
        return int(self.local.sum())

    @property
    def n_global(self) -> int:
        return int(self.global_.sum())

    def to_dataframe(self) -> pd.DataFrame:
        """One row per response token: pos, index, token, token_id, waad, delta, fai, preplan,
        anchor, dominated, preplan_link (absolute position of the coupled preplan token, -1)."""
        pos = self.positions
        return pd.DataFrame(
            {
                "pos": pos,
                "index": np.arange(len(self.tokens)),
                "token": list(self.tokens),
                "token_id": self.token_ids,
                "waad": self.waad,
                "delta": self.delta,
                "fai": self.fai,
                "preplan": self.preplan,
                "anchor": self.anchor,
                "dominated": self.dominated,
                "preplan_link": np.where(self.link >= 0, self.n_prompt + self.link, -1),
            }
        )

    def heads_dataframe(self) -> pd.DataFrame:
        """One row per head of the chosen layers: layer, head, span, group (local/global/other)."""
        rows = []
        for i, layer in enumerate(self.layers):
            for h in range(self.span.shape[1]):
                group = "local" if self.local[i, h] else "global" if self.global_[i, h] else "other"
                rows.append({"layer": layer, "head": h, "span": float(self.span[i, h]), "group": group})
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        """Counts and cut-offs for run.json."""
        heads = lambda m: [[self.layers[i], int(h)] for i, h in zip(*np.nonzero(m))]  # noqa: E731
        return {
            "model": self.model,
            "prompt": self.prompt,
            "response": self.response,
            "generated": self.generated,
            "n_prompt_tokens": self.n_prompt,
            "n_response_tokens": len(self.tokens),
            "layers": list(self.layers),
            "local_heads": heads(self.local),
            "global_heads": heads(self.global_),
            "tau_waad": self.tau_waad,
            "n_preplan": int(self.preplan.sum()),
            "n_anchor": int(self.anchor.sum()),
            "n_dominated_anchors": int(self.dominated.sum()),
        }

    def to_record(self) -> dict:
        """JSON-able form for a resumable log (`interp.runs.SampleLog`); arrays keep their dtype
        and shape, so `from_record` gives back an equal result (floats round-trip exactly)."""
        out: dict = {}
        for f in fields(self):
            if f.name == "config":
                continue
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = {"array": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_record(cls, record: dict, config: PreplanConfig) -> PreplanResult:
        """Inverse of `to_record` (``record`` may carry a log's extra "id" key)."""
        values: dict = {"config": config}
        for f in fields(cls):
            if f.name == "config":
                continue
            value = record[f.name]
            if isinstance(value, dict) and "array" in value:
                value = np.asarray(value["array"], dtype=value["dtype"]).reshape(value["shape"])
            elif isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True, eq=False)
class PreplanRun:
    """Preplan and anchor tokens of every prompt of a run (what `interp score preplan` writes).

    Attributes:
        config: the settings used.
        model: model name.
        ids: the prompt ids, in order.
        results: one `PreplanResult` per prompt.
        windows: per chosen layer (``results[i].layers``), its sliding window (None: global);
            empty: all global.
    """

    config: PreplanConfig
    model: str
    ids: tuple[str, ...]
    results: tuple[PreplanResult, ...]
    windows: tuple[Optional[int], ...] = ()

    @property
    def checks(self) -> tuple[Check, ...]:
        """Whether dist, waad and band mean in the chosen layers what the paper means.

        - ``windowed_layers_shorter_than_text`` (when a chosen layer has a window): chosen layers
          whose sliding window is shorter
          than the longest prompt + response, at most 0. In such a layer a head's span (mean
          dist) is capped by the window, so "local" and "global" heads partly sort layers by
          their window rather than heads by their behaviour.
        - ``band_within_window`` (when such layers exist): FAI_s averages A_is over the queries
          s + lo .. s + hi; the narrowest window must exceed hi for all of them to see s.
        """
        if not self.results:
            return ()
        layers = self.results[0].layers
        windows = self.windows if len(self.windows) == len(layers) else (None,) * len(layers)
        if all(w is None for w in windows):  # only global layers: a check that could not fail is not reported
            return ()
        longest = max(r.n_prompt + len(r.tokens) for r in self.results)
        short = [(l, w) for l, w in zip(layers, windows) if w is not None and w < longest]
        out = [
            at_most(
                "windowed_layers_shorter_than_text", len(short), 0,
                f"chosen layers whose sliding window is shorter than the longest text ({longest} tokens): "
                + (", ".join(f"layer {l} (W={w})" for l, w in short) or "none")
                + "; there a head's span is capped by the window, so the local/global split reflects the window",
            )
        ]  # fmt: skip
        if short:
            narrowest = min(w for _, w in short)
            hi = self.config.band[1]
            out.append(
                at_least(
                    "band_within_window", narrowest, hi + 1,
                    f"the narrowest window of a chosen layer (W={narrowest}) against FAI's band ({self.config.band[0]}, "
                    f"{hi}): queries more than W - 1 tokens after s cannot attend to s",
                )
            )  # fmt: skip
        return tuple(out)

    def _joined(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        df = pd.concat([f.assign(sample=i) for f, i in zip(frames, self.ids)], ignore_index=True)
        return df[["sample"] + [c for c in df.columns if c != "sample"]]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per response token of every prompt (tokens.csv): sample, then the columns of
        `PreplanResult.to_dataframe`."""
        return self._joined([r.to_dataframe() for r in self.results])

    def heads_dataframe(self) -> pd.DataFrame:
        """One row per (prompt, head) (heads.csv): sample, layer, head, span, group."""
        return self._joined([r.heads_dataframe() for r in self.results])

    def summary(self) -> dict:
        """``{"samples": [{"id", ...PreplanResult.summary()}]}`` for run.json."""
        return {
            "samples": [{"id": i, **r.summary()} for i, r in zip(self.ids, self.results)],
            "checks": as_records(self.checks),
        }
