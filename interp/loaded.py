"""The loaded model: `LoadedModel`, what every analysis is handed (made by `interp.loading`).

A `LoadedModel` carries the
model, its tokenizer, the architecture facts every analysis needs (:class:`ArchInfo`) and the
hook adapter chosen from the table in `interp.hooks.adapters`; it owns nothing about
instrumenting them (that is `interp.hooks`), only the one-call `LoadedModel.run_with_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from interp.errors import InterpError
from interp.hooks.families import ArchInfo
from interp.protocols import Adapter

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A model ready to instrument.

    Attributes:
        model: the ``transformers`` model (backend "hf") or the ``TransformerBridge`` ("tl").
        tokenizer: its tokenizer.
        arch: architecture facts.
        adapter: the hook adapter from `interp.hooks` (knows the model's internals).
        backend: "hf" or "tl".
        name: what the model was loaded as.
        hf_model: the underlying HF model (the same object as ``model`` for "hf").
        prepend_bos: whether `encode`/`encode_batch` (and every dataset built for this model)
            put the tokenizer's BOS token first: None (default) does what the tokenizer does
            (Llama, Mistral and Gemma tokenizers add one, SmolLM2's and GPT-2's do not), True
            or False overrides it. The effective choice is `prepends_bos`.
    """

    model: Any
    tokenizer: Any
    arch: ArchInfo
    adapter: Adapter
    backend: str
    name: str
    hf_model: Any = field(repr=False, default=None)
    prepend_bos: bool | None = None
    _bos: int | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._bos = _resolve_bos(self.tokenizer, self.prepend_bos)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "prepend_bos" and "_bos" in self.__dict__:  # a notebook's lm.prepend_bos = False
            self.__dict__["_bos"] = _resolve_bos(self.tokenizer, value)  # checked before it is set
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        a = self.arch
        return (
            f"LoadedModel({self.name!r}, backend={self.backend!r}, {a.model_type}: {a.n_layers} layers x "
            f"{a.n_heads} heads ({a.n_kv_heads} kv), d_head={a.d_head}, n_ctx={a.n_ctx}, "
            f"attention={self.hf_model.config._attn_implementation!r}, device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embedding (the first device of a sharded model)."""
        emb = self.hf_model.get_input_embeddings()
        weight = getattr(emb, "weight", None)
        if weight is not None and weight.device.type != "meta":
            return weight.device
        # every weight offloaded (accelerate keeps them on "meta" here): inputs go to the CPU
        return next((p.device for p in self.hf_model.parameters() if p.device.type != "meta"), torch.device("cpu"))

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding (token ids must be below this)."""
        return int(self.hf_model.get_input_embeddings().weight.shape[0])

    @property
    def stop_ids(self) -> frozenset[int]:
        """End-of-sequence token ids (tokenizer's and generation config's)."""
        ids: set[int] = set()
        sources = (
            getattr(self.tokenizer, "eos_token_id", None),
            getattr(self.hf_model.generation_config, "eos_token_id", None),
        )
        for src in sources:
            if src is not None:
                ids.update([src] if isinstance(src, int) else list(src))
        return frozenset(ids)

    @property
    def reuses_prefixes(self) -> bool:
        """Whether `logits_tail` accepts a prefix KV cache and `interp.hooks.start_at_layer` works
        (HF backend; the TL bridge always runs the whole sequence and every layer)."""
        return self.backend == "hf"

    def logits_tail(self, input_ids: torch.Tensor, n: int = 1, *, past: Any = None, grad: bool = False) -> torch.Tensor:
        """Logits ``[batch, n, vocab]`` of the last ``n`` positions only.

        On the HF backend the unembedding runs on those positions alone (a pre-hook on the
        model's ``get_output_embeddings()`` slices its input), which saves the [batch, pos,
        vocab] logits: a fifth of a 135M model's compute and most of the memory of a
        large-vocabulary one. The TL bridge computes every position and we slice.

        Args:
            past: a KV cache (`new_cache`, filled by an earlier call) holding the positions
                before ``input_ids``, which are then only the continuation (HF backend).
            grad: keep the autograd graph.
        """
        if not 1 <= n <= int(input_ids.shape[-1]):
            raise InterpError(f"n must lie in 1..{int(input_ids.shape[-1])} (the positions given), got {n}")
        if self.backend != "hf":
            if past is not None:
                raise InterpError("a prefix KV cache needs the HF backend (backend='hf')")
            return self.forward(input_ids, grad=grad)[:, -n:]
        head = self.hf_model.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda mod, args: (args[0][:, -n:], *args[1:]))
        try:
            if past is None:
                return self.forward(input_ids, grad=grad)[:, -n:]
            self.check_length(int(input_ids.shape[-1]) + int(past.get_seq_length()))
            with torch.set_grad_enabled(grad):
                return self.hf_model(input_ids=input_ids, past_key_values=past, use_cache=True).logits[:, -n:]
        finally:
            handle.remove()

    @torch.no_grad()
    def greedy(
        self,
        prompt_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        stop: Any = None,
        past: Any = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Greedy decoding of one prompt, stopping after a stop token (kept) or ``max_new_tokens``.

        Args:
            prompt_ids: [1, pos] prompt token ids (with ``past``: only the prompt's continuation).
            stop: token ids that end the answer, or a rule ``token_id -> bool`` such as
                ``stop_rule(newline=True)`` (default: `stop_ids`).
            past: a KV cache (`new_cache`) already holding the prompt's first positions; the
                steps append to it (HF backend). Default: a new full cache.

        Returns:
            [1, new] generated ids. HF backend: with a full KV cache (`new_cache`); TL: the
            whole sequence each step.
        """
        if prompt_ids.shape[0] != 1:
            raise InterpError(f"greedy decodes one prompt at a time, got a batch of {prompt_ids.shape[0]}")
        if max_new_tokens < 1:
            raise InterpError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        from tqdm.auto import tqdm

        ids = self.stop_ids if stop is None else (None if callable(stop) else frozenset(stop))
        is_stop = stop if ids is None else ids.__contains__
        done = 0 if past is None else self.cache_length(past)
        # positions fed: the prompt and every new token but the last (which is never fed back)
        self.check_length(done + int(prompt_ids.shape[1]) + max_new_tokens - 1)
        cache = past if past is not None else (self.new_cache() if self.backend == "hf" else None)
        logits = self.logits_tail(prompt_ids, 1, past=cache) if cache is not None else self.forward(prompt_ids)[:, -1:]
        seq, new = prompt_ids, []
        for step in tqdm(range(max_new_tokens), desc="generating", unit="tok", leave=False, disable=not progress):
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # [1, 1]
            new.append(int(nxt))
            if is_stop(new[-1]) or step == max_new_tokens - 1:
                break
            if cache is not None:
                logits = self.logits_tail(nxt, 1, past=cache)
            else:
                seq = torch.cat([seq, nxt], dim=1)
                logits = self.forward(seq)[:, -1:]
        return torch.tensor([new], dtype=torch.long, device=prompt_ids.device)

    def stop_rule(self, *, newline: bool = False) -> Callable[[int], bool]:
        """``token_id -> bool``: an end-of-sequence token (`stop_ids`), and with ``newline`` also
        any token whose text holds a newline (Wu et al.'s answers end at the line), for `greedy`."""
        ids, seen = self.stop_ids, {}

        def is_stop(token: int) -> bool:
            if token in ids:
                return True
            if not newline or self.tokenizer is None:
                return False
            if token not in seen:
                seen[token] = "\n" in self.tokenizer.decode([token])
            return seen[token]

        return is_stop

    def logits_at(self, input_ids: torch.Tensor, positions: Sequence[int], *, past: Any = None) -> torch.Tensor:
        """Logits ``[batch, len(positions), vocab]`` at ``positions`` (indices into ``input_ids``), no grad.

        Like `logits_tail`, only those positions are unembedded (HF backend), and ``past`` is a
        KV cache holding the positions before ``input_ids`` (HF backend), which it extends.
        """
        width = int(input_ids.shape[-1])
        where = torch.as_tensor(list(positions), dtype=torch.long)
        if where.numel() == 0 or int(where.min()) < 0 or int(where.max()) >= width:
            raise InterpError(f"positions must be 1+ indices in [0, {width}), got {where.tolist()[:8]}")
        if self.backend != "hf":
            if past is not None:
                raise InterpError("a prefix KV cache needs the HF backend (backend='hf')")
            return self.forward(input_ids)[:, where.to(input_ids.device)]
        head = self.hf_model.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda mod, args: (args[0][:, where.to(args[0].device)], *args[1:]))
        try:
            if past is None:
                return self.forward(input_ids)
            self.check_length(width + self.cache_length(past))
            with torch.no_grad():
                return self.hf_model(input_ids=input_ids, past_key_values=past, use_cache=True).logits
        finally:
            handle.remove()

    def cache_length(self, cache: Any) -> int:
        """Positions a KV cache (`new_cache`) holds."""
        return int(cache.get_seq_length())

    def crop_cache(self, cache: Any, length: int) -> None:
        """Drop a KV cache's positions from ``length`` on, in place (keeps the first ``length``)."""
        extra = self.cache_length(cache) - int(length)
        if length < 0 or extra < 0:
            raise InterpError(f"cannot crop a cache of {self.cache_length(cache)} positions to {length}")
        if extra:
            cache.crop(-extra)

    def repeat_cache(self, cache: Any, copies: int, length: int) -> Any:
        """A new KV cache whose ``copies`` batch rows each hold ``cache``'s first ``length`` positions
        (views, no copy: a cached pass appends by concatenation, leaving ``cache`` as it was)."""
        from transformers import DynamicCache

        if length == 0:
            return DynamicCache()
        if not 0 < length <= self.cache_length(cache) or cache.layers[0].keys.shape[0] != 1:
            raise InterpError(
                f"repeat_cache takes the first 1..{self.cache_length(cache)} positions of a batch-1 cache, got {length}"
            )
        data = []
        for layer in cache.layers:
            k, v = layer.keys[..., :length, :], layer.values[..., :length, :]
            data.append((k.expand(copies, -1, -1, -1), v.expand(copies, -1, -1, -1)))
        return DynamicCache(ddp_cache_data=data)

    def new_cache(self) -> Any:
        """An empty KV cache that keeps every key (``transformers.DynamicCache()`` without a config).

        Use it for decoding under a capture: HF's default cache for a windowed model keeps only
        the last W keys of its sliding layers, so captured keys would not line up with token
        positions (interp refuses such keys). With a full cache the model still applies its
        window through the attention mask, and its logits are the same.
        """
        from transformers import DynamicCache

        return DynamicCache()

    def attention_kwargs(self, layer: int) -> dict[str, Any]:
        """Keyword arguments that make `interp.kernels.attention_stats` reproduce ``layer``'s softmax.

        Every analysis passes these (``attention_stats(q, k, **lm.attention_kwargs(layer), ...)``):
        the layer's scale, causality, sliding window, logit soft-cap and, where the family has
        them (GPT-OSS), its learned sink logits [head].
        """
        spec = self.arch.layer_attention(layer)
        kwargs: dict[str, Any] = {
            "scale": spec.scale,
            "causal": spec.causal,
            "sliding_window": spec.sliding_window,
            "softcap": spec.softcap,
        }
        if spec.sink_logits:
            kwargs["sink_logits"] = self.adapter.sink_logits(self, layer)
        return kwargs

    def check_length(self, n_tokens: int) -> None:
        """Raise when a prompt of ``n_tokens`` tokens does not fit the model's context."""
        if n_tokens > self.arch.n_ctx:
            raise InterpError(
                f"prompt has {n_tokens} tokens but {self.name} has a context of {self.arch.n_ctx} tokens: "
                "shorten the prompt (or the haystack/response) to fit"
            )
        if n_tokens == 0:
            raise InterpError("prompt is empty: give at least one token of text")

    @property
    def prepends_bos(self) -> bool:
        """Whether every encoded text starts with the BOS token `bos_id` (the effective
        `prepend_bos`: the tokenizer's own behaviour unless overridden)."""
        return self._bos is not None

    @property
    def bos_id(self) -> int | None:
        """The token id `encode` puts at position 0 of every text: the tokenizer's BOS when
        `prepends_bos`, else None. Datasets take it as ``bos=`` so their positions count it."""
        return self._bos

    def starts_with_bos(self, ids: Sequence[int] | torch.Tensor) -> bool:
        """Whether position 0 of ``ids`` (one sequence: [pos] or [1, pos]) is the tokenizer's BOS
        token, however it got there (prepended by `encode`, or the BOS text a chat template opens
        with). Analyses use it to say whether "the first token" is BOS (e.g. an attention sink).

        Note: SmolLM2's tokenizer names its chat-turn token ``<|im_start|>`` BOS, so its chat
        prompts start "with BOS" although `prepends_bos` is False for it.
        """
        flat = torch.as_tensor(ids).reshape(-1) if isinstance(ids, torch.Tensor) else list(ids)
        bos = getattr(self.tokenizer, "bos_token_id", None) if self.tokenizer is not None else None
        return bos is not None and len(flat) > 0 and int(flat[0]) == int(bos)

    def with_bos(self, ids: Sequence[int]) -> list[int]:
        """``ids`` with `bos_id` put first when the model prepends BOS and ``ids`` does not already
        start with it (a chat template's own BOS text is kept, never doubled)."""
        out = [int(t) for t in ids]
        if self._bos is not None and out[:1] != [self._bos]:
            out.insert(0, self._bos)
        return out

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """``user`` wrapped in the model's chat template with the generation prompt (plain text if none).

        The text is the template's, BOS text included where the template writes one (Gemma,
        Llama 3): `encode` then keeps that BOS and adds none, so the prompt has exactly one.
        """
        if getattr(self.tokenizer, "chat_template", None) is None:
            return user
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except (TemplateError, ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as err:
            # jinja2's sandbox refuses unsafe attribute access (SecurityError, a TemplateError); a template
            # can also raise on purpose (raise_exception) or fail on the messages
            raise InterpError(
                f"the chat template of model '{self.name}' failed ({type(err).__name__}: {' '.join(str(err).split())[:160]}); "
                "nothing was run with it: fix chat_template.jinja (or tokenizer_config.json's chat_template) in the "
                "model folder, or remove it to use plain prompts"
            ) from None

    def tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` as a piece of a longer sequence: no BOS, no special tokens added
        (special-token text inside ``text``, such as a chat template's, is still recognised)."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def encode(self, text: str, *, check: bool = True, bos: bool = True) -> torch.Tensor:
        """Token ids ``[1, pos]`` of ``text`` on the model's device, exactly as the model sees them.

        Tokenised as the model's tokenizer does: its BOS first where it adds one (`prepends_bos`,
        overridden by ``prepend_bos``), nothing else added (no EOS). Both backends get these ids
        (the TL bridge is always fed ids, never strings), so positions agree between "hf" and "tl".

        Args:
            check: raise when the ids do not fit the model's context.
            bos: False encodes a continuation (a response, an answer token) without BOS.
        """
        pieces = self.tokens(text)
        ids = torch.tensor([self.with_bos(pieces) if bos else pieces], dtype=torch.long)
        if check:
            self.check_length(ids.shape[1])
        return ids.to(self.device)

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(input_ids [batch, pos], attention_mask [batch, pos])`` for several texts,
        each row as `encode` gives it (BOS first, after the padding, where the model prepends it)."""
        if not texts:
            raise InterpError("no texts given: pass at least one string")
        rows = [self.with_bos(self.tokens(t)) for t in texts]
        for r in rows:
            self.check_length(len(r))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[b, width - len(r) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The text of ``ids`` (without a tokenizer: the ids, space-separated)."""
        if self.tokenizer is None:
            return " ".join(self.token_strings(ids))
        return self.tokenizer.decode(ids)

    def token_strings(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """One display string per token id (for plots and tables; without a tokenizer: the id)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if self.tokenizer is None:
            return [str(i) for i in ids]
        return [self.tokenizer.decode([i]) for i in ids]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, grad: bool = False
    ) -> torch.Tensor:
        """Logits ``[batch, pos, vocab]`` of one forward pass (no KV cache, no grad unless ``grad``)."""
        self.check_length(int(input_ids.shape[-1]))
        with torch.set_grad_enabled(grad):
            return self.adapter.forward(self, input_ids, attention_mask)

    def run_with_cache(
        self,
        text_or_ids: Any,
        layers: Any = None,
        sites: Sequence[str] = ("q", "k", "v", "z", "resid_pre"),
        stop_at_layer: int | None = None,
        attention_mask: torch.Tensor | None = None,
        names_filter: Any = None,
    ) -> tuple[torch.Tensor | None, Any]:
        """``(logits or None, cache)`` of one pass over a text, texts or token ids, as TransformerLens's
        ``run_with_cache``: `interp.hooks.run_with_cache` (see there for every argument). The
        `interp.hooks.Cache` answers ``cache["z", 5]``, TL names such as
        ``cache["blocks.5.attn.hook_pattern"]``, ``cache.pattern(5, 1)`` and ``cache.stats(5)``."""
        from interp.hooks.run import run_with_cache

        return run_with_cache(self, text_or_ids, layers, sites, stop_at_layer, attention_mask, names_filter)


def _tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` puts its BOS token before a text when called with its defaults
    (``add_special_tokens=True``), read off the tokenizer itself rather than its family."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    probe = "a b"
    plain = list(tokenizer(probe, add_special_tokens=False).input_ids)
    full = list(tokenizer(probe).input_ids)
    return full[:1] == [bos] and plain[:1] != [bos]


def _resolve_bos(tokenizer: Any, prepend_bos: bool | None) -> int | None:
    """The BOS id every text starts with under the setting ``prepend_bos`` (None: as the tokenizer does)."""
    if prepend_bos is None:
        return int(tokenizer.bos_token_id) if tokenizer is not None and _tokenizer_adds_bos(tokenizer) else None
    if not prepend_bos:
        return None
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if bos is None:
        raise InterpError(
            "prepend_bos=True (--prepend-bos) but this model's tokenizer has no BOS token: "
            "leave the setting out (the tokenizer's own behaviour) or use --no-prepend-bos"
        )
    return int(bos)
