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
