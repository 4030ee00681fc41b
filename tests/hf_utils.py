"""Tiny random Hugging Face checkpoints, made by transformers itself in a temp dir."""

import json
import os

import numpy as np

# Each covers a feature: GQA everywhere; q/k/v bias (qwen2); q/k norm (qwen3); tied and untied
# embeddings; Llama-3 rope scaling with a short original context so that it matters.
TINY_HF = {
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    ),
    "qwen3": dict(
        model_type="qwen3",
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=120,
        tie_word_embeddings=False,
        rope_theta=1e6,
    ),
    "llama": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=136,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
    ),
    # MoE/MLA (tests/test_moe.py): several routed experts, shared experts, dense first layers,
    # group-limited routing (V2 softmax max-per-group, V3 sigmoid top-2-sum with the bias),
    # q low-rank (V3) and full-rank (V2) queries, value size != key size, YaRN with mscale.
    "qwen3_moe": dict(
        model_type="qwen3_moe",
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        vocab_size=96,
        tie_word_embeddings=False,
        rope_theta=1e6,
    ),
    "deepseek_v2": dict(
        model_type="deepseek_v2",
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=2,  # one dense, one MoE layer
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        n_shared_experts=2,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=1.5,
        q_lora_rank=None,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=12,
        vocab_size=96,
        tie_word_embeddings=False,
    ),
    "deepseek_v3": dict(
        model_type="deepseek_v3",
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=2,  # one dense, one MoE layer
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        q_lora_rank=24,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=12,
        vocab_size=96,
        tie_word_embeddings=False,
        max_position_embeddings=32,  # = factor * original, as transformers expects
        rope_scaling=dict(
            rope_type="yarn",
            factor=4.0,
            original_max_position_embeddings=8,
            beta_fast=32,
            beta_slow=1,
            mscale=0.9,
            mscale_all_dim=1.0,
        ),
    ),
}


def make_hf_model(path, kind, init_std=0.02, seed=0, vocab=None, bos=None, eos=None):
    """Saves a random transformers model of `kind` to `path`; returns the torch model."""
    import torch
    import transformers

    kw = dict(TINY_HF[kind])
    kw.pop("model_type")
    if vocab is not None:
        kw["vocab_size"] = vocab
    cls = {
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
        "llama": transformers.LlamaConfig,
        "qwen3_moe": transformers.Qwen3MoeConfig,
        "deepseek_v2": transformers.DeepseekV2Config,
        "deepseek_v3": transformers.DeepseekV3Config,
    }[kind]
    config = cls(
        **kw, initializer_range=init_std, bos_token_id=bos, eos_token_id=eos, pad_token_id=None
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Norm weights and biases start at 1 and 0: perturb them so the parity test sees them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():  # DeepSeek-V3's balancing bias: make it matter
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.3 * torch.randn_like(b))
    model.eval()
    model.save_pretrained(path)
    return model


def torch_logits(model, tokens, mask):
    import torch

    with torch.no_grad():
        t = torch.tensor(np.asarray(tokens))
        m = torch.tensor(np.asarray(mask))
        pos = torch.clamp(m.cumsum(-1) - 1, min=0)
        out = model(input_ids=t, attention_mask=m, position_ids=pos)
    return out.logits.float().numpy()


def edit_json(path, **changes):
    with open(path) as f:
        d = json.load(f)
    d.update(changes)
    with open(path, "w") as f:
        json.dump(d, f)


def save_hf_tokenizer(path, backend, config=None, tokenizer_json=None, **special_tokens):
    """Saves a `tokenizers.Tokenizer` through transformers' `PreTrainedTokenizerFast` (its
    post-processor as set), then merges `config` into tokenizer_config.json and `tokenizer_json`
    into tokenizer.json. The edits are how configs found on the Hub are made: transformers writes
    no add_bos_token / add_eos_token and replaces a null post-processor by an empty template."""
    import transformers

    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)
    fast.save_pretrained(str(path))
    edit_json(os.path.join(path, "tokenizer_config.json"), **(config or {}))
    edit_json(os.path.join(path, "tokenizer.json"), **(tokenizer_json or {}))


def left_padded_batch(rng, vocab, lengths, width):
    tokens = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, width - n :] = rng.integers(0, vocab, n)
        mask[i, width - n :] = 1
    return tokens, mask


__all__ = [
    "TINY_HF",
    "edit_json",
    "left_padded_batch",
    "make_hf_model",
    "os",
    "save_hf_tokenizer",
    "torch_logits",
]


def micro_config(**changes):
    """The unit tests' model: the `tiny` preset at d_model 32, 2 layers, 4 query / 2 kv heads of
    8 (GQA), MLP 48, vocabulary 61, init_std 0.1; `changes` override any field."""
    from r1jax.models import get_preset

    base = dict(
        d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48, vocab_size=61,
        init_std=0.1,
    )  # fmt: skip
    return get_preset("tiny", **{**base, **changes})
