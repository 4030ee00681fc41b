"""The transformer against transformers (PyTorch), against itself (KV cache, chunked log-probs,
sharded), and the presets against their published parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_utils import TINY_HF, left_padded_batch, make_hf_model, torch_logits

from r1jax import sharding as shd
from r1jax.models import (
    PRESETS,
    count_params,
    decode_step,
    forward,
    get_preset,
    init_params,
    init_suffix,
    logits,
    logits_from_hidden,
    positions_from_mask,
    prefill,
    token_logprobs,
)
from r1jax.models import hf as hf_io


@pytest.fixture(scope="module", params=sorted(TINY_HF))
def hf_model(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp(request.param))
    # A large init scale makes logits peaked, so a 1e-4 bound is a real test.
    model = make_hf_model(path, request.param, init_std=0.2)
    return request.param, path, model


def test_logits_match_transformers_with_left_padding(hf_model):
    kind, path, model = hf_model
    cfg, params = hf_io.load_hf(path)
    tokens, mask = left_padded_batch(np.random.default_rng(0), cfg.vocab_size, [9, 24, 3, 17], 24)
    ref = torch_logits(model, tokens, mask)
    out = np.asarray(logits(params, jnp.asarray(tokens), jnp.asarray(mask), cfg))
    valid = mask.astype(bool)
    assert np.abs(ref).max() > 1.0  # peaked enough for the bound to mean something
    np.testing.assert_allclose(out[valid], ref[valid], atol=1e-4, rtol=0)
    if kind == "llama":  # the Llama-3 rope scaling is exercised: without it logits differ
        plain = cfg.replace(rope_llama3=None)
        out2 = np.asarray(logits(params, jnp.asarray(tokens), jnp.asarray(mask), plain))
        assert np.abs(out2[valid] - ref[valid]).max() > 1e-2


def _tiny(**kw):
    small = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=160)
    return get_preset("tiny", init_std=0.1, **{**small, **kw})


@pytest.mark.parametrize("dtype,atol", [("float32", 2e-5), ("bfloat16", 0.1)])
def test_kv_cache_decode_equals_full_forward_at_every_position(dtype, atol):
    """Prefill left-padded prompts once, decode G continuations per prompt token by token.
    bfloat16: compute and cache in bf16 on XLA:CPU (B, G, kv heads and heads per kv head all > 1
    is the decode-attention shape XLA:CPU has no bf16 x bf16 -> fp32 dot for in the einsum's
    natural output order); bound: bf16 rounding of logits up to ~3 (measured 0.037)."""
    cfg = _tiny(qk_norm=True, tie_embeddings=False, dtype=dtype)
    params = init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(1)
    B, G, P, T = 3, 2, 8, 6
    prompt, pmask = left_padded_batch(rng, cfg.vocab_size, [8, 5, 2], P)
    cont = rng.integers(0, cfg.vocab_size, (B * G, T)).astype(np.int32)

    h_last, prefix = jax.jit(prefill, static_argnums=3)(params, prompt, pmask, cfg)
    suffix = init_suffix(cfg, B * G, T + 3)
    step = jax.jit(decode_step, static_argnums=5)
    cached = [np.repeat(logits_from_hidden(params, h_last, cfg), G, axis=0)]
    start = np.repeat(pmask.sum(1), G)
    for t in range(T):
        h, suffix = step(params, cont[:, t], start + t, prefix, suffix, cfg)
        cached.append(np.asarray(logits_from_hidden(params, h, cfg)))
    cached = np.stack(cached, axis=1)  # [N, T+1, V]: after the prompt, then after each token

    full_tok = np.concatenate([np.repeat(prompt, G, 0), cont], 1)
    full_mask = np.concatenate([np.repeat(pmask, G, 0), np.ones_like(cont)], 1)
    ref = np.asarray(logits(params, full_tok, full_mask, cfg))[:, P - 1 :]
    np.testing.assert_allclose(cached, ref, atol=atol, rtol=0)


def test_chunked_logprobs_and_entropy_equal_direct():
    cfg = _tiny(vocab_size=203)  # not a multiple of the chunk: the padded tail is masked
    params = init_params(cfg, jax.random.key(2))
    rng = np.random.default_rng(3)
    tokens, mask = left_padded_batch(rng, cfg.vocab_size, [12, 7], 12)
    h = forward(params, tokens, positions_from_mask(mask), mask, cfg)
    z = np.asarray(logits_from_hidden(params, h, cfg), np.float64) / 0.7
    logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    ref_lp = np.take_along_axis(z, tokens[..., None], -1)[..., 0] - logz
    p = np.exp(z - logz[..., None])
    ref_ent = -(p * np.log(p)).sum(-1)
    for chunk in (64, 8192):
        lp, ent = token_logprobs(
            params, h, tokens, cfg, temperature=0.7, vocab_chunk=chunk, with_entropy=True
        )
        np.testing.assert_allclose(lp, ref_lp, atol=2e-5)
        np.testing.assert_allclose(ent, ref_ent, atol=2e-5)

    def loss(p, chunk):
        h = forward(p, tokens, positions_from_mask(mask), mask, cfg)
        return token_logprobs(p, h, tokens, cfg, vocab_chunk=chunk)[0].sum()

    g_chunk, g_full = jax.grad(loss)(params, 64), jax.grad(loss)(params, 8192)
    for a, b in zip(jax.tree.leaves(g_chunk), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_forward_on_8_devices_equals_single_device():
    assert jax.device_count() == 8
    cfg = _tiny(n_heads=4, n_kv_heads=2, d_ff=128)
    mesh8 = shd.make_mesh((("fsdp", 4), ("tensor", 2)))
    p1 = init_params(cfg, jax.random.key(4))
    p8 = init_params(cfg, jax.random.key(4), mesh8)
    assert p8["layers"]["wq"].sharding.spec == jax.sharding.PartitionSpec(
        None, "fsdp", "tensor", None
    )
    tokens, mask = left_padded_batch(np.random.default_rng(5), cfg.vocab_size, [5] * 8, 16)
    batch = shd.batch_sharding(mesh8, 2, 8)
    out1 = logits(p1, tokens, mask, cfg)
    out8 = jax.jit(logits, static_argnums=3)(
        p8, jax.device_put(tokens, batch), jax.device_put(mask, batch), cfg
    )
    np.testing.assert_allclose(out8, out1, atol=1e-5, rtol=1e-5)


# Published sizes (model cards), in billions, to the digits they are published with.
PUBLISHED = {
    "qwen2.5-0.5b": 0.49,
    "qwen2.5-1.5b": 1.54,
    "qwen2.5-3b": 3.09,
    "qwen2.5-7b": 7.61,
    "qwen2.5-32b": 32.8,
    "qwen2.5-math-1.5b": 1.54,
    "qwen2.5-math-7b": 7.62,
    "qwen3-0.6b": 0.6,
    "qwen3-1.7b": 1.7,
    "qwen3-4b": 4.0,
    "qwen3-8b": 8.2,
    "llama3.2-1b": 1.24,
    "llama3.2-3b": 3.21,
    "llama3.1-8b": 8.03,
    "r1-distill-qwen-1.5b": 1.78,
    "r1-distill-qwen-7b": 7.62,
    # MoE totals (activated counts: tests/test_moe.py); DeepSeek-V3 without its MTP module.
    "deepseek-v3": 671.0,
    "deepseek-v2-lite": 15.7,
    "moonlight-16b-a3b": 16.0,
    "qwen3-30b-a3b": 30.5,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_count_matches_published(name):
    published = PUBLISHED[name]
    digits = len(str(published).split(".")[1])
    # Model cards round or truncate to the last published digit.
    assert abs(count_params(PRESETS[name]) / 1e9 - published) < 10**-digits


def test_presets_cover_the_issue_list():
    assert set(PUBLISHED) | {"tiny"} == set(PRESETS)
