"""Tiny random models of every family in the adapter table, built from configs (no downloads).

Each config is as small as the family allows and switches on what makes the family different:
non-zero biases where it has them, a sliding window shorter than the test sequences
(``WINDOW`` < ``SEQ``) on the layers that have one, a logit soft-cap where the family has one
(Gemma 2/3) and random learned sink logits (GPT-OSS). Weights are drawn with a fixed seed so two
builds (one eager, one on the family's default attention) hold identical weights.
"""

from __future__ import annotations

import torch

from interp.hooks import SUPPORTED_MODEL_TYPES

__all__ = ["FAMILIES", "WINDOW", "SEQ", "VOCAB", "build", "config", "tokenizer"]

VOCAB = 101
WINDOW = 5  # sliding window, shorter than SEQ
SEQ = 13
FAMILIES = tuple(SUPPORTED_MODEL_TYPES)

_SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    intermediate_size=64,
    num_hidden_layers=3,
    max_position_embeddings=128,
    initializer_range=0.2,
)  # large enough weights that scores reach the soft-cap
_GQA = dict(num_attention_heads=6, num_key_value_heads=2, head_dim=8)
_ALTERNATING = ["sliding_attention", "full_attention", "sliding_attention"]


def config(family: str):
    """A tiny config of ``family`` exercising its windows, caps, biases and sinks."""
    import transformers as T

    if family == "llama":
        return T.LlamaConfig(**_SMALL, **_GQA, attention_bias=True)
    if family == "mistral":
        return T.MistralConfig(**_SMALL, **_GQA, sliding_window=WINDOW)
    if family == "mixtral":
        return T.MixtralConfig(**_SMALL, **_GQA, sliding_window=WINDOW, num_local_experts=4, num_experts_per_tok=2)
    if family == "qwen2":
        # use_sliding_window with max_window_layers=1: layer 0 full, layers 1-2 windowed.
        return T.Qwen2Config(
            **_SMALL,
            num_attention_heads=6,
            num_key_value_heads=3,
            use_sliding_window=True,
            sliding_window=WINDOW,
            max_window_layers=1,
        )
    if family == "qwen2_moe":
        return T.Qwen2MoeConfig(
            **_SMALL,
            num_attention_heads=6,
            num_key_value_heads=3,
            use_sliding_window=True,
            sliding_window=WINDOW,
            max_window_layers=1,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
        )
    if family == "qwen3":
        return T.Qwen3Config(**_SMALL, **_GQA, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1)
    if family == "qwen3_moe":
        return T.Qwen3MoeConfig(
            **_SMALL,
            **_GQA,
            use_sliding_window=True,
            sliding_window=WINDOW,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
        )
    if family == "gemma":
        return T.GemmaConfig(**_SMALL, **_GQA)
    if family == "gemma2":
        return T.Gemma2Config(
            **_SMALL,
            **_GQA,
            sliding_window=WINDOW,
            attn_logit_softcapping=2.0,
            query_pre_attn_scalar=12,
            layer_types=_ALTERNATING,
        )
    if family == "gemma3_text":
        return T.Gemma3TextConfig(
            **_SMALL,
            **_GQA,
            sliding_window=WINDOW,
            attn_logit_softcapping=2.0,
            query_pre_attn_scalar=12,
            layer_types=_ALTERNATING,
        )
    if family == "gpt_oss":
        return T.GptOssConfig(
            **_SMALL,
            **_GQA,
            sliding_window=WINDOW,
            layer_types=_ALTERNATING,
            num_local_experts=4,
            num_experts_per_tok=2,
            attention_bias=True,
        )
    if family == "olmo":
        return T.OlmoConfig(**_SMALL, **_GQA)
    if family == "olmo2":
        return T.Olmo2Config(**_SMALL, **_GQA)
    if family == "phi":
        return T.PhiConfig(
            **_SMALL, num_attention_heads=6, num_key_value_heads=2, partial_rotary_factor=0.5, qk_layernorm=True
        )
    if family == "phi3":
        return T.Phi3Config(
            **_SMALL, num_attention_heads=6, num_key_value_heads=2, sliding_window=WINDOW, pad_token_id=0
        )
    if family == "starcoder2":
        return T.Starcoder2Config(
            **_SMALL, num_attention_heads=6, num_key_value_heads=2, sliding_window=WINDOW, use_bias=True
        )
    if family == "cohere":
        return T.CohereConfig(**_SMALL, num_attention_heads=6, num_key_value_heads=2)
    if family == "gpt_neox":
        return T.GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=6,
            rotary_pct=0.5,
            max_position_embeddings=128,
            initializer_range=0.2,
        )
    if family == "gpt2":
        return T.GPT2Config(
            vocab_size=VOCAB,
            n_embd=48,
            n_layer=3,
            n_head=6,
            n_positions=128,
            initializer_range=0.2,
            scale_attn_by_inverse_layer_idx=True,
        )
    raise KeyError(f"no tiny config for family {family!r}: add one to tests/integration/families.py")


def build(family: str, attn: str | None = None, *, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A tiny random ``family`` model on attention ``attn`` (None = the family's default: SDPA if
    it supports it, else eager), every bias and sink logit drawn non-zero."""
    from transformers import AutoModelForCausalLM

    from interp.models import _default_attention

    cfg = config(family)
    attn = attn or _default_attention(cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or name.endswith(".sinks"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.to(dtype).eval()


def tokenizer():
    """A word-level tokenizer over the tiny vocabulary (what a TransformerBridge needs to boot)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 1)} | {"<unk>": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>", eos_token="w0", bos_token="w0"
    )
