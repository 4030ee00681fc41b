"""Decoder-only transformers (Qwen2/2.5, Qwen3, Llama 3.x) as pure functions over pytrees."""

from r1jax.models.config import (
    PRESETS,
    ModelConfig,
    UnsupportedConfigError,
    from_hf_config,
    get_preset,
    load_hf_config,
    to_hf_config,
)
from r1jax.models.transformer import (
    abstract_params,
    count_params,
    decode_step,
    forward,
    init_params,
    init_suffix,
    logits,
    logits_from_hidden,
    param_shardings,
    param_specs,
    positions_from_mask,
    prefill,
    token_logprobs,
)

__all__ = [
    "PRESETS",
    "ModelConfig",
    "UnsupportedConfigError",
    "abstract_params",
    "count_params",
    "decode_step",
    "forward",
    "from_hf_config",
    "get_preset",
    "init_params",
    "init_suffix",
    "load_hf_config",
    "logits",
    "logits_from_hidden",
    "param_shardings",
    "param_specs",
    "positions_from_mask",
    "prefill",
    "to_hf_config",
    "token_logprobs",
]
