"""Model hyperparameters, named presets, and the two-way mapping to Hugging Face config.json.

One frozen `ModelConfig` describes the decoder-only family we support: Qwen2/Qwen2.5 (q/k/v
bias), Qwen3 (q/k RMSNorm, explicit head_dim) and Llama 3.x (Llama-3 RoPE scaling). It is
hashable, so it can be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from r1jax.errors import ConfigError
from r1jax.models.attention import IMPLEMENTATIONS

ARCHITECTURES = {  # model_type -> HF architectures entry
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int  # D
    n_layers: int  # L
    n_heads: int  # H (query heads)
    n_kv_heads: int  # K (key/value heads; H % K == 0)
    head_dim: int  # Dh
    d_ff: int  # F (SwiGLU hidden size)
    arch: str = "qwen2"  # "qwen2" | "qwen3" | "llama": only affects export and defaults
    rope_theta: float = 10_000.0
    # Llama-3 scaling: (factor, low_freq_factor, high_freq_factor, original_max_positions).
    rope_llama3: tuple[float, float, float, int] | None = None
    rms_eps: float = 1e-6
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    tie_embeddings: bool = False
    max_seq_len: int = 32_768  # informational; RoPE has no table to size
    init_std: float = 0.02
    param_dtype: str = "float32"  # storage dtype of the parameters
    dtype: str = "float32"  # compute dtype of matmuls; norms, softmax and log-probs are fp32
    remat: bool = False  # rematerialise each layer in the backward pass
    # Decode with the layers as straight-line code instead of a lax.scan: on CPU a decode step
    # then no longer copies each layer's weights out of the stack (rollouts ~7% faster in
    # benchmarks/grpo_step.py), at the cost of compile time that grows with depth.
    unroll_decode: bool = False
    # Full-sequence attention (training, scoring, prefill): "auto" | "dense" | "blocked" |
    # "cudnn" | "splash" (r1jax/models/attention.py). auto: dense while the sequence fits one
    # key block, else splash on TPU (one device, or in shard_map under a mesh set with
    # jax.set_mesh), cuDNN on GPU where it applies, else blocked.
    attention: str = "auto"
    attention_block_q: int = 512  # query rows per block (blocked, splash)
    attention_block_kv: int = 512  # keys per block; also auto's dense limit
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    # Mixture of experts (r1jax/models/moe.py); n_experts = 0: every layer has a dense MLP.
    n_experts: int = 0  # E routed experts per MoE layer
    n_experts_per_tok: int = 0  # k experts chosen per token
    moe_d_ff: int = 0  # hidden size of one routed expert
    n_shared_experts: int = 0  # shared experts, run as one MLP of n_shared_experts * moe_d_ff
    first_k_dense: int = 0  # the first layers keep a dense MLP of d_ff (DeepSeek)
    router: str = "softmax"  # "softmax" (V2, Qwen3-MoE) | "sigmoid" (V3, with a balancing bias)
    n_group: int = 1  # group-limited routing: experts in n_group groups ...
    topk_group: int = 1  # ... of which each token may use topk_group
    norm_topk_prob: bool = False  # renormalise the chosen gates to sum 1
    routed_scaling: float = 1.0  # gates times this
    capacity_factor: float = 0.0  # 0: dropless; c > 0: an expert keeps ceil(c*T*k/E) tokens
    # Expert-parallel dispatch over the mesh's expert axis (moe.routed_experts): "gather" (the
    # expert group's tokens all-gathered) | "all_to_all" (each assignment sent to its expert's
    # device in buffers of a fixed size per destination: worst case when dropless).
    expert_dispatch: str = "gather"
    # The grouped expert matmuls on each device (moe.py): "ragged" (jax.lax.ragged_dot) |
    # "blocked" (each expert's tokens padded to whole blocks, one batched matmul) | "auto":
    # blocked on CPU, where ragged_dot is slow.
    expert_matmul: str = "auto"
    # Multi-head latent attention (r1jax/models/mla.py); kv_lora_rank = 0: standard attention.
    # With MLA, head_dim is the non-RoPE query/key part (qk_nope_head_dim) and n_kv_heads=n_heads.
    kv_lora_rank: int = 0  # the cached latent's size
    q_lora_rank: int = 0  # 0: a full-rank query projection (DeepSeek-V2-Lite)
    qk_rope_dim: int = 0  # the decoupled RoPE part of each query and the shared RoPE key
    v_head_dim: int = 0
    # YaRN (factor, original_max_positions, beta_fast, beta_slow, mscale, mscale_all_dim).
    rope_yarn: tuple[float, int, float, float, float, float] | None = None
    rope_interleave: bool = False  # HF stores the RoPE dims interleaved (import/export only)

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_heads={self.n_heads} is not a multiple of "
                f"n_kv_heads={self.n_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")
        if self.attention not in IMPLEMENTATIONS:
            raise ValueError(
                f"ModelConfig.attention={self.attention!r}; expected one of {IMPLEMENTATIONS}"
            )
        for name in ("attention_block_q", "attention_block_kv"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")

        if self.n_experts:
            k, g = self.n_experts_per_tok, self.n_group
            if not 0 < k <= self.n_experts or self.moe_d_ff <= 0:
                raise ValueError(
                    f"ModelConfig: n_experts_per_tok={k} must be in 1..n_experts="
                    f"{self.n_experts} and moe_d_ff={self.moe_d_ff} positive"
                )
            if self.n_experts % g or not 0 < self.topk_group <= g:
                raise ValueError(
                    f"ModelConfig: n_group={g} must divide n_experts={self.n_experts} and "
                    f"topk_group={self.topk_group} be in 1..n_group"
                )
            if self.router not in ("softmax", "sigmoid"):
                raise ValueError(f"ModelConfig.router={self.router!r}; expected softmax|sigmoid")
            if self.expert_dispatch not in ("gather", "all_to_all"):
                raise ValueError(
                    f"ModelConfig.expert_dispatch={self.expert_dispatch!r}; expected "
                    "gather|all_to_all"
                )
            if self.expert_matmul not in ("auto", "ragged", "blocked"):
                raise ValueError(
                    f"ModelConfig.expert_matmul={self.expert_matmul!r}; expected "
                    "auto|ragged|blocked"
                )
        if self.kv_lora_rank and self.n_kv_heads != self.n_heads:
            raise ValueError(
                f"ModelConfig: MLA (kv_lora_rank={self.kv_lora_rank}) needs n_kv_heads="
                f"n_heads={self.n_heads}, got {self.n_kv_heads}"
            )
        if self.kv_lora_rank and (self.qk_rope_dim % 2 or self.v_head_dim <= 0):
            raise ValueError(
                f"ModelConfig: MLA needs an even qk_rope_dim (got {self.qk_rope_dim}) and a "
                f"positive v_head_dim (got {self.v_head_dim})"
            )
        if self.arch not in ARCHITECTURES:
            raise ValueError(
                f"ModelConfig.arch={self.arch!r}; expected one of {list(ARCHITECTURES)}"
            )

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)


def _qwen25(d, layers, heads, kv, ff, vocab=151_936, tie=True, theta=1e6, max_len=32_768):
    return ModelConfig(
        vocab,
        d,
        layers,
        heads,
        kv,
        d // heads,
        ff,
        "qwen2",
        theta,
        None,
        1e-6,
        qkv_bias=True,
        tie_embeddings=tie,
        max_seq_len=max_len,
        bos_id=151_643,
        eos_ids=(151_643,),
    )


def _qwen3(d, layers, heads, ff, tie=True):
    return ModelConfig(
        151_936,
        d,
        layers,
        heads,
        8,
        128,
        ff,
        "qwen3",
        1e6,
        None,
        1e-6,
        qk_norm=True,
        tie_embeddings=tie,
        max_seq_len=40_960,
        bos_id=151_643,
        eos_ids=(151_645,),
    )


def _llama3(d, layers, heads, ff, tie, factor):
    return ModelConfig(
        128_256,
        d,
        layers,
        heads,
        8,
        d // heads,
        ff,
        "llama",
        500_000.0,
        (factor, 1.0, 4.0, 8192),
        1e-5,
        tie_embeddings=tie,
        max_seq_len=131_072,
        bos_id=128_000,
        eos_ids=(128_001, 128_008, 128_009),
    )


PRESETS: dict[str, ModelConfig] = {
    # ~4M parameters, Qwen2 layout: CPU benchmarks and smoke runs (tests shrink it further).
    "tiny": ModelConfig(256, 256, 4, 4, 2, 64, 1024, "qwen2", qkv_bias=True, tie_embeddings=True),
    "qwen2.5-0.5b": _qwen25(896, 24, 14, 2, 4864),
    "qwen2.5-1.5b": _qwen25(1536, 28, 12, 2, 8960),
    "qwen2.5-3b": _qwen25(2048, 36, 16, 2, 11008),
    # Qwen/Qwen2.5-7B (base) config.json: untied, max_position_embeddings 131072, rope_theta 1e6,
    # no sliding window; model card: 7.61B parameters, context 131,072. The paper-scale base of
    # configs/r1zero.py (32,768 new tokens need more than a 32k context).
    "qwen2.5-7b": _qwen25(3584, 28, 28, 4, 18944, vocab=152_064, tie=False, max_len=131_072),
    # Qwen2.5-32B (base) config.json: untied, 131072 positions, rms_norm_eps 1e-5 (Instruct: 1e-6).
    "qwen2.5-32b": _qwen25(5120, 64, 40, 8, 27648, 152_064, tie=False, max_len=131_072).replace(
        rms_eps=1e-5
    ),
    "qwen2.5-math-1.5b": _qwen25(1536, 28, 12, 2, 8960, theta=1e4, max_len=4096),
    "qwen2.5-math-7b": _qwen25(3584, 28, 28, 4, 18944, 152_064, tie=False, theta=1e4, max_len=4096),
    "qwen3-0.6b": _qwen3(1024, 28, 16, 3072),
    "qwen3-1.7b": _qwen3(2048, 28, 16, 6144),
    "qwen3-4b": _qwen3(2560, 36, 32, 9728),
    "qwen3-8b": _qwen3(4096, 36, 32, 12288, tie=False),
    "llama3.2-1b": _llama3(2048, 16, 32, 8192, tie=True, factor=32.0),
    "llama3.2-3b": _llama3(3072, 28, 24, 8192, tie=True, factor=32.0),
    "llama3.1-8b": _llama3(4096, 32, 32, 14336, tie=False, factor=8.0),
    # The R1 distilled models are Qwen2.5-Math shapes with untied embeddings.
    "r1-distill-qwen-1.5b": _qwen25(1536, 28, 12, 2, 8960, tie=False, theta=1e4, max_len=131_072),
    "r1-distill-qwen-7b": _qwen25(3584, 28, 28, 4, 18944, 152_064, False, 1e4, 131_072),
}


def check_context(cfg: ModelConfig, prompt_len: int, max_new_tokens: int, where: str = "") -> None:
    """A one-line error when prompt + new tokens exceed the model's context (max_seq_len, HF
    max_position_embeddings): positions past it were never trained. RoPE scaling (rope_llama3)
    is the configured way to go further, so with it nothing is checked."""
    total = prompt_len + max_new_tokens
    if total > cfg.max_seq_len and cfg.rope_llama3 is None and cfg.rope_yarn is None:
        raise ConfigError(
            f"{where or 'config'}: config.sampling.max_prompt_len ({prompt_len}) + "
            f"config.sampling.max_new_tokens ({max_new_tokens}) = {total} exceeds the model's "
            f"context max_seq_len (max_position_embeddings) = {cfg.max_seq_len}; lower them, or "
            "use a longer-context base or configure RoPE scaling (model.overrides.rope_llama3)"
        )


# MoE presets: values from each model's config.json on the Hugging Face Hub (repo named in the
# comment); the multi-token-prediction layer of DeepSeek-V3 is not part of the model.
_DEEPSEEK_MLA = dict(kv_lora_rank=512, qk_rope_dim=64, v_head_dim=128, rope_interleave=True)
PRESETS.update(
    {
        # deepseek-ai/DeepSeek-V3 (and -R1, -R1-Zero, -V3-Base): 671B total, 37B activated
        # (README_WEIGHTS: 36.7B; counts from these shapes in tests/test_moe.py).
        "deepseek-v3": ModelConfig(
            129_280,
            7168,
            61,
            128,
            128,
            128,
            18_432,
            "deepseek_v3",
            10_000.0,
            rms_eps=1e-6,
            max_seq_len=163_840,
            bos_id=0,
            eos_ids=(1,),
            n_experts=256,
            n_experts_per_tok=8,
            moe_d_ff=2048,
            n_shared_experts=1,
            first_k_dense=3,
            router="sigmoid",
            n_group=8,
            topk_group=4,
            norm_topk_prob=True,
            routed_scaling=2.5,
            q_lora_rank=1536,
            rope_yarn=(40.0, 4096, 32.0, 1.0, 1.0, 1.0),
            **_DEEPSEEK_MLA,
        ),  # fmt: skip
        # deepseek-ai/DeepSeek-V2-Lite: 15.7B total, 2.4B activated; full-rank queries.
        "deepseek-v2-lite": ModelConfig(
            102_400,
            2048,
            27,
            16,
            16,
            128,
            10_944,
            "deepseek_v2",
            10_000.0,
            rms_eps=1e-6,
            max_seq_len=163_840,
            bos_id=100_000,
            eos_ids=(100_001,),
            n_experts=64,
            n_experts_per_tok=6,
            moe_d_ff=1408,
            n_shared_experts=2,
            first_k_dense=1,
            router="softmax",
            routed_scaling=1.0,
            rope_yarn=(40.0, 4096, 32.0, 1.0, 0.707, 0.707),
            **_DEEPSEEK_MLA,
        ),  # fmt: skip
        # moonshotai/Moonlight-16B-A3B: the DeepSeek-V3 architecture at V2-Lite size; reported
        # as 15.29B total / 2.24B activated without the embedding and LM head (both matched).
        "moonlight-16b-a3b": ModelConfig(
            163_840,
            2048,
            27,
            16,
            16,
            128,
            11_264,
            "deepseek_v3",
            50_000.0,
            rms_eps=1e-5,
            max_seq_len=8192,
            bos_id=163_584,
            eos_ids=(163_585,),
            n_experts=64,
            n_experts_per_tok=6,
            moe_d_ff=1408,
            n_shared_experts=2,
            first_k_dense=1,
            router="sigmoid",
            norm_topk_prob=True,
            routed_scaling=2.446,
            **_DEEPSEEK_MLA,
        ),  # fmt: skip
        # Qwen/Qwen3-30B-A3B: 30.5B total, 3.3B activated; no shared expert.
        "qwen3-30b-a3b": ModelConfig(
            151_936,
            2048,
            48,
            32,
            4,
            128,
            6144,
            "qwen3_moe",
            1e6,
            qk_norm=True,
            rms_eps=1e-6,
            max_seq_len=40_960,
            bos_id=151_643,
            eos_ids=(151_645,),
            n_experts=128,
            n_experts_per_tok=8,
            moe_d_ff=768,
            norm_topk_prob=True,
        ),  # fmt: skip
    }
)


def get_preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)


# ----------------------------------------------------------------------------------------------
# Hugging Face config.json <-> ModelConfig


class UnsupportedConfigError(ValueError):
    """A config.json field asks for something this model code does not implement."""


def _rope_fields(hf: dict, where: str, yarn: bool = False) -> tuple[float, tuple | None]:
    # transformers >= 5 writes `rope_parameters`; older files have rope_theta + rope_scaling.
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or {}
    theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    src = params if params.get("rope_type", "default") != "default" else scaling
    if kind == "default":
        return float(theta), None
    if kind == "yarn" and yarn:  # (DeepSeek MLA models) returned as the rope_yarn tuple
        return float(theta), (
            float(src["factor"]),
            int(src["original_max_position_embeddings"]),
            float(src.get("beta_fast") or 32),
            float(src.get("beta_slow") or 1),
            float(src.get("mscale") or 0),
            float(src.get("mscale_all_dim") or 0),
        )
    if kind != "llama3":
        raise UnsupportedConfigError(
            f"{where}: rope scaling type {kind!r} is not supported (llama3, none; yarn with MLA)"
        )
    return float(theta), (
        float(src["factor"]),
        float(src["low_freq_factor"]),
        float(src["high_freq_factor"]),
        int(src["original_max_position_embeddings"]),
    )


def from_hf_config(hf: dict[str, Any], where: str = "config.json", **overrides) -> ModelConfig:
    """ModelConfig from a parsed HF config.json; rejects features we do not implement."""
    arch = hf.get("model_type")
    archs = hf.get("architectures") or []
    if arch not in ARCHITECTURES or any(a not in ARCHITECTURES.values() for a in archs):
        raise UnsupportedConfigError(
            f"{where}: unknown architecture model_type={arch!r} architectures={archs}; "
            f"supported: {sorted(ARCHITECTURES.values())}"
        )

    def need(key):
        if key not in hf:
            raise UnsupportedConfigError(f"{where}: missing field {key!r}")
        return hf[key]

    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedConfigError(f"{where}: hidden_act={hf['hidden_act']!r}; only 'silu'")
    if hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or []):
        raise UnsupportedConfigError(f"{where}: use_sliding_window (sliding-window attention)")
    if hf.get("mlp_bias"):
        raise UnsupportedConfigError(f"{where}: mlp_bias=true is not supported")
    if arch != "qwen2" and hf.get("attention_bias"):
        raise UnsupportedConfigError(f"{where}: attention_bias=true (with o_proj bias)")
    moe_mla = _moe_mla_fields(hf, arch, where) if arch in _MOE_ARCHS else {}
    if not moe_mla and (hf.get("num_experts") or hf.get("num_local_experts")):
        raise UnsupportedConfigError(f"{where}: mixture-of-experts layers in model_type={arch!r}")
    d, heads = int(need("hidden_size")), int(need("num_attention_heads"))
    theta, llama3 = _rope_fields(hf, where, yarn="kv_lora_rank" in moe_mla)
    if llama3 is not None and len(llama3) == 6:
        moe_mla["rope_yarn"], llama3 = llama3, None
    eos = hf.get("eos_token_id")
    eos = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
    base = dict(n_heads=heads, n_kv_heads=int(hf.get("num_key_value_heads") or heads))
    base["head_dim"] = int(hf.get("head_dim") or d // heads)
    base.update({k: moe_mla.pop(k) for k in list(base) if k in moe_mla})
    cfg = ModelConfig(
        vocab_size=int(need("vocab_size")),
        d_model=d,
        n_layers=int(need("num_hidden_layers")),
        **base,
        d_ff=int(need("intermediate_size")),
        arch=arch,
        rope_theta=theta,
        rope_llama3=llama3,
        rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=arch == "qwen2",
        qk_norm=arch in ("qwen3", "qwen3_moe"),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=int(hf.get("max_position_embeddings", 32_768)),
        init_std=float(hf.get("initializer_range", 0.02)),
        bos_id=hf.get("bos_token_id"),
        eos_ids=eos,
        **moe_mla,
    )
    return cfg.replace(**overrides)


_MOE_ARCHS = ("qwen3_moe", "deepseek_v2", "deepseek_v3")


def _moe_mla_fields(hf: dict, arch: str, where: str) -> dict:
    """ModelConfig fields of the MoE (and, for DeepSeek, MLA) parts of a config.json."""
    if arch == "qwen3_moe":
        if hf.get("mlp_only_layers") or hf.get("decoder_sparse_step", 1) != 1:
            raise UnsupportedConfigError(f"{where}: mlp_only_layers / decoder_sparse_step != 1")
        return dict(
            n_experts=int(hf.get("num_experts") or hf["num_local_experts"]),
            n_experts_per_tok=int(hf["num_experts_per_tok"]),
            moe_d_ff=int(hf["moe_intermediate_size"]),
            norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        )
    method = hf.get("topk_method") or ("noaux_tc" if arch == "deepseek_v3" else "greedy")
    if method not in ("greedy", "group_limited_greedy", "noaux_tc"):
        raise UnsupportedConfigError(f"{where}: topk_method={method!r}")
    if hf.get("scoring_func", "softmax" if method != "noaux_tc" else "sigmoid") != (
        "sigmoid" if method == "noaux_tc" else "softmax"
    ):
        raise UnsupportedConfigError(f"{where}: scoring_func={hf['scoring_func']!r}")
    grouped = method != "greedy"
    heads = int(hf["num_attention_heads"])
    if int(hf.get("num_key_value_heads") or heads) != heads:
        raise UnsupportedConfigError(f"{where}: MLA with num_key_value_heads != heads")
    return dict(
        n_heads=heads,
        n_kv_heads=heads,
        n_experts=int(hf["n_routed_experts"]),
        n_experts_per_tok=int(hf["num_experts_per_tok"]),
        moe_d_ff=int(hf["moe_intermediate_size"]),
        n_shared_experts=int(hf.get("n_shared_experts") or 0),
        first_k_dense=int(hf.get("first_k_dense_replace") or 0),
        router="sigmoid" if method == "noaux_tc" else "softmax",
        n_group=int(hf.get("n_group") or 1) if grouped else 1,
        topk_group=int(hf.get("topk_group") or 1) if grouped else 1,
        norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        routed_scaling=float(hf.get("routed_scaling_factor") or 1.0),
        kv_lora_rank=int(hf["kv_lora_rank"]),
        q_lora_rank=int(hf.get("q_lora_rank") or 0),
        qk_rope_dim=int(hf["qk_rope_head_dim"]),
        head_dim=int(hf["qk_nope_head_dim"]),
        v_head_dim=int(hf["v_head_dim"]),
        # transformers' DeepseekV2 always rotates interleaved pairs (complex multiply).
        rope_interleave=bool(hf.get("rope_interleave", True)),
    )


def to_hf_config(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.rope_llama3:
        factor, low, high, orig = cfg.rope_llama3
        rope.update(
            rope_type="llama3",
            factor=factor,
            low_freq_factor=low,
            high_freq_factor=high,
            original_max_position_embeddings=orig,
        )
    hf = {
        "architectures": [ARCHITECTURES[cfg.arch]],
        "model_type": cfg.arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.d_ff,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std,
        "rope_theta": cfg.rope_theta,  # read by transformers 4.x ...
        "rope_parameters": rope,  # ... and by transformers 5.x
        "attention_bias": cfg.qkv_bias if cfg.arch != "qwen2" else True,
        "use_sliding_window": False,
        "bos_token_id": cfg.bos_id,
        "eos_token_id": list(cfg.eos_ids)
        if len(cfg.eos_ids) > 1
        else next(iter(cfg.eos_ids), None),
        "torch_dtype": dtype,
        "dtype": dtype,
    }
    if cfg.rope_yarn:
        factor, orig, fast, slow, mscale, mscale_all = cfg.rope_yarn
        rope.update(rope_type="yarn", factor=factor, original_max_position_embeddings=orig)
        rope.update(beta_fast=fast, beta_slow=slow, mscale=mscale, mscale_all_dim=mscale_all)
    if cfg.rope_llama3 or cfg.rope_yarn:
        hf["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if cfg.arch == "qwen3_moe":
        hf.update(
            num_experts=cfg.n_experts,
            num_experts_per_tok=cfg.n_experts_per_tok,
            moe_intermediate_size=cfg.moe_d_ff,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
    elif cfg.arch in _MOE_ARCHS:
        method = "noaux_tc" if cfg.router == "sigmoid" else "greedy"
        method = "group_limited_greedy" if method == "greedy" and cfg.n_group > 1 else method
        hf.update(
            n_routed_experts=cfg.n_experts,
            num_experts_per_tok=cfg.n_experts_per_tok,
            moe_intermediate_size=cfg.moe_d_ff,
            n_shared_experts=cfg.n_shared_experts,
            first_k_dense_replace=cfg.first_k_dense,
            topk_method=method,
            n_group=cfg.n_group,
            topk_group=cfg.topk_group,
            norm_topk_prob=cfg.norm_topk_prob,
            routed_scaling_factor=cfg.routed_scaling,
            kv_lora_rank=cfg.kv_lora_rank,
            q_lora_rank=cfg.q_lora_rank or None,
            qk_rope_head_dim=cfg.qk_rope_dim,
            qk_nope_head_dim=cfg.head_dim,
            v_head_dim=cfg.v_head_dim,
            head_dim=cfg.qk_rope_dim,  # what transformers writes for DeepSeek
            rope_interleave=cfg.rope_interleave,
        )
    return hf


def load_hf_config(path: str, **overrides) -> ModelConfig:
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: no config.json (is {path!r} a Hugging Face model dir?)")
    with open(file) as f:
        try:
            hf = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: invalid JSON at line {e.lineno}: {e.msg}") from e
    return from_hf_config(hf, where=file, **overrides)
