"""Tiny random configs of the architectures the matrix covers, each keeping the structure of its real checkpoints.

Every model is 2 layers, hidden 32 (ELECTRA: 16-wide embeddings projected to 32), at most 64 positions, and the
1,024-entry vocabulary of :func:`hfx.testing.tiny_tokenizer`, so any id below 1,024 is a real token. Sizes are
shrunk; what each family does differently is kept: grouped-query or multi-query attention, fused projections,
Conv1D, a sliding window, fused 3-D MoE experts, a head width that is not hidden / heads, position offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from hfx.testing import VOCAB_SIZE

__all__ = ["ARCHS", "Arch", "build", "build_config"]

_ATTN = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
         "max_position_embeddings": 64}
_DEC = {**_ATTN, "num_key_value_heads": 2}  # grouped-query: 2 KV heads for 4 query heads
_MOE = {"num_local_experts": 4, "num_experts_per_tok": 2}
_QWEN_MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
_ENC = {**_ATTN, "type_vocab_size": 2}


@dataclass(frozen=True)
class Arch:
    """One row of the architecture matrix: a transformers ``model_type``, the structure it stands for, its kwargs."""

    name: str
    model_type: str
    family: str  # decoder, encoder or encoder-decoder
    what: str
    kwargs: tuple[tuple[str, Any], ...] = ()


def _a(name: str, family: str, what: str, model_type: str | None = None, **kw: Any) -> Arch:
    return Arch(name, model_type or name, family, what, tuple(kw.items()))


ARCHS: tuple[Arch, ...] = (
    _a("llama", "decoder", "grouped-query attention", **_DEC),
    _a("mistral", "decoder", "sliding window 32, GQA", **_DEC, sliding_window=32),
    _a("qwen2", "decoder", "q/k/v biases, GQA", **_DEC),
    _a("qwen3", "decoder", "head_dim 16 != 32/4, q/k norms", **_DEC, head_dim=16),
    _a("gemma", "decoder", "head_dim 16 != 32/4, tied embeddings", **_DEC, head_dim=16),
    _a("gemma2", "decoder", "sliding window 16 on alternate layers, soft-capping", **_DEC, head_dim=8,
       sliding_window=16),
    _a("gemma3_text", "decoder", "sliding + global layers, head_dim 16", **_DEC, head_dim=16, sliding_window=16,
       layer_types=["sliding_attention", "full_attention"]),
    _a("phi3", "decoder", "fused qkv_proj and gate_up_proj", **_DEC),
    _a("phi", "decoder", "partial rotary, dense", **{k: v for k, v in _DEC.items()}),
    _a("stablelm", "decoder", "partial rotary, layer norm", **_DEC),
    _a("starcoder2", "decoder", "sliding window, biases", **_DEC, sliding_window=32),
    _a("olmo2", "decoder", "post-norm, q/k norms", **_DEC),
    _a("falcon", "decoder", "multi-query attention, fused qkv", hidden_size=32, num_hidden_layers=2,
       num_attention_heads=4, multi_query=True, new_decoder_architecture=False, parallel_attn=True,
       alibi=False, max_position_embeddings=64),
    _a("gpt_bigcode", "decoder", "multi-query attention, fused c_attn", n_embd=32, n_layer=2, n_head=4,
       n_inner=64, n_positions=64, multi_query=True),
    _a("gpt_neox", "decoder", "fused query_key_value, parallel residual", **_ATTN),
    _a("bloom", "decoder", "fused query_key_value, ALiBi", hidden_size=32, n_layer=2, n_head=4),
    _a("gpt2", "decoder", "Conv1D projections (in, out), absolute positions", n_embd=32, n_layer=2, n_head=4,
       n_inner=64, n_positions=64),
    _a("gptj", "decoder", "parallel attention + MLP, rotary on 8 dims", n_embd=32, n_layer=2, n_head=4,
       n_inner=64, n_positions=64, rotary_dim=4),
    _a("opt", "decoder", "learned positions with offset 2", hidden_size=32, num_hidden_layers=2,
       num_attention_heads=4, ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32),
    _a("mixtral", "decoder", "MoE, fused 3-D experts", **_DEC, **_MOE),
    _a("qwen2_moe", "decoder", "MoE + shared expert", **_DEC, **_QWEN_MOE, shared_expert_intermediate_size=32),
    _a("qwen3_moe", "decoder", "MoE, head_dim 16", **_DEC, **_QWEN_MOE, head_dim=16),
    _a("olmoe", "decoder", "MoE, q/k norms", **_DEC, num_experts=4, num_experts_per_tok=2),
    _a("bert", "encoder", "post-norm encoder", **_ENC),
    _a("roberta", "encoder", "positions offset by pad id + 1", **{**_ENC, "max_position_embeddings": 66}),
    _a("xlm-roberta", "encoder", "RoBERTa layout, another prefix", **{**_ENC, "max_position_embeddings": 66}),
    _a("electra", "encoder", "embedding_size 16 projected to hidden 32", **_ENC, embedding_size=16),
    _a("distilbert", "encoder", "no token types, q_lin/k_lin/v_lin", dim=32, n_layers=2, n_heads=4,
       hidden_dim=64, max_position_embeddings=64),
    _a("deberta-v2", "encoder", "disentangled attention, query_proj/key_proj/value_proj", **_ENC,
       relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"]),
    _a("modernbert", "encoder", "fused Wqkv, global + local attention", **_ATTN, global_attn_every_n_layers=2,
       local_attention=16, cls_token_id=2, sep_token_id=3),
    _a("albert", "encoder", "shared layer weights, embedding_size 16", **_ENC, embedding_size=16),
    _a("t5", "encoder-decoder", "relative position buckets, no positions table", d_model=32, d_kv=8, d_ff=64,
       num_layers=2, num_decoder_layers=2, num_heads=4),
    _a("bart", "encoder-decoder", "learned positions with offset 2", d_model=32, encoder_layers=2,
       decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
       decoder_ffn_dim=64, max_position_embeddings=64),
    _a("bert2bert", "encoder-decoder", "EncoderDecoderModel, BERT on both sides", "encoder-decoder"),
)


def build_config(arch: Arch) -> PretrainedConfig:
    """The tiny config of ``arch``: vocabulary 1,024, pad 0, BOS 2, EOS 3 (the tiny Llama tokenizer's ids)."""
    ids = {"vocab_size": VOCAB_SIZE, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    if arch.model_type == "encoder-decoder":
        from transformers import BertConfig, EncoderDecoderConfig

        enc = BertConfig(**_ENC, **ids)
        dec = BertConfig(**_ENC, **ids, is_decoder=True, add_cross_attention=True)
        cfg = EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
        cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 0, 3
        return cfg
    extra = {"decoder_start_token_id": 0} if arch.family == "encoder-decoder" else {}
    return AutoConfig.for_model(arch.model_type, **ids, **extra, **dict(arch.kwargs))


def build(arch: Arch, task: str, seed: int = 0) -> Any:
    """A tiny random model of ``arch`` for ``task`` (base, causal-lm, seq2seq-lm), same seed -> same weights,
    dropout off, the caller's RNG untouched."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cls = {"base": AutoModel, "causal-lm": AutoModelForCausalLM, "seq2seq-lm": AutoModelForSeq2SeqLM}[task]
    config = build_config(arch)
    for key, value in config.to_dict().items():  # no dropout: outputs must be deterministic
        if ("dropout" in key or key.endswith("pdrop")) and isinstance(value, float):
            setattr(config, key, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls.from_config(config)
    return model.eval()
