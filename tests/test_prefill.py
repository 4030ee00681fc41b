"""Chunked prefill (sampling.prefill_chunk) against the whole-prompt prefill, its reference:
the prompt KV, the last logits and the sampled tokens. Cost: the file took 38 s of CPU (user
time, startup included), mostly compiles of small programs."""

import dataclasses

import jax
import numpy as np
import pytest
from hf_utils import left_padded_batch, micro_config

from r1jax import rollout, sampling
from r1jax.errors import ConfigError
from r1jax.models import init_params
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

CFG = micro_config(init_std=0.2)
# Left-padded prompts (the sampler's layout) of 7, 3, 12 and 16 tokens in a 16-wide batch.
LENGTHS = [7, 3, 12, 16]


def _prompts():
    return left_padded_batch(np.random.default_rng(0), CFG.vocab_size, LENGTHS, 16)


def _prefill(params, tokens, mask, cfg, chunk):
    s = sampling.SamplingConfig(prefill_chunk=chunk, kv_dtype="float32")
    run = jax.jit(lambda p, t, m: sampling.prefill(p, t, m, cfg, s))
    h, prefix = run(params, tokens, mask)
    return jax.device_get((tfm.logits_from_hidden(params, h, cfg), prefix))


def _assert_prefill_equal(out, ref, mask):
    np.testing.assert_array_equal(out[1]["mask"], ref[1]["mask"])
    np.testing.assert_array_equal(out[1]["length"], ref[1]["length"])
    assert np.abs(ref[0]).max() > 1.0
    np.testing.assert_allclose(out[0], ref[0], atol=1e-5, rtol=0)
    real = mask.astype(bool)  # padding positions' K/V are never read (and differ)
    for name, axis in (("k", 4), ("v", 3)):  # k [L,B,K,Dh,P], v [L,B,K,P,Dh]
        a, b = np.moveaxis(out[1][name], axis, 2), np.moveaxis(ref[1][name], axis, 2)
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a[:, real], b[:, real], atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize(
    "cfg",
    [
        CFG,  # auto: dense attention (the 16-key cache fits a key block)
        CFG.replace(attention="blocked", attention_block_q=2, attention_block_kv=4),
    ],
    ids=["dense", "blocked"],
)
def test_chunked_prefill_equals_whole_prompt(cfg):
    """Chunks of 4 (divides 16), 5 and 7 (do not: more left padding), and 16 (one chunk: the
    whole-prompt path itself)."""
    params = init_params(cfg, jax.random.key(0))
    tokens, mask = _prompts()
    ref = _prefill(params, tokens, mask, cfg, 0)
    for chunk in (4, 5, 7):
        _assert_prefill_equal(_prefill(params, tokens, mask, cfg, chunk), ref, mask)


def test_mla_and_dropless_moe_chunked_and_the_refused_model():
    """An MLA model (chunks attend to the latent cache in the absorbed form) and a dropless MoE
    model with MLA layers prefill in chunks like whole, and the static decoder samples the same
    tokens from the MLA model (sampling used to fail on MLA caches); a capacity-limited MoE
    (whose expert capacity counts the tokens of one forward) is refused, naming the field.
    Cost: 12.5 s (load average ~5): six compiles of small programs."""
    mla = ModelConfig(61, 32, 2, 4, 4, 8, 48, kv_lora_rank=16, qk_rope_dim=8, v_head_dim=12)
    mla = mla.replace(init_std=0.2, arch="deepseek_v3")
    moe = mla.replace(n_experts=4, n_experts_per_tok=2, moe_d_ff=24, first_k_dense=1)
    tokens, mask = _prompts()
    for cfg in (mla, moe):
        params = init_params(cfg, jax.random.key(1))
        ref = _prefill(params, tokens, mask, cfg, 0)
        out = _prefill(params, tokens, mask, cfg, 5)
        assert np.abs(ref[0]).max() > 1.0
        np.testing.assert_allclose(out[0], ref[0], atol=1e-5, rtol=0)
        real = mask.astype(bool)  # the latent cache [L,B,P,r+p] at real positions
        a, b = out[1]["kv"][:, real], ref[1]["kv"][:, real]
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # The static decoder on the MLA model (its latent cache in the sampler's KV dtype).
    params = init_params(mla, jax.random.key(1))
    s = sampling.SamplingConfig(max_new_tokens=8, chunk=4, eos_ids=(3,), kv_dtype="float32")
    ref, out = (
        jax.device_get(sampling.generate(params, tokens, mask, jax.random.key(0), cfg=mla, s=sc))
        for sc in (s, dataclasses.replace(s, prefill_chunk=5))
    )
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["logp"], ref["logp"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sampling.prefill_chunk"):
        tfm.check_prefill_chunk(moe.replace(capacity_factor=1.0), 4)
    tfm.check_prefill_chunk(moe.replace(capacity_factor=1.0), 0)


def test_static_decoder_samples_the_same_tokens_with_chunked_prefill():
    """prefill_chunk 5 gives the whole-prompt decoder's tokens exactly and its log-probs within
    1e-5 (the continuous decoder with a chunked prefill: tests/test_continuous.py)."""
    params = init_params(CFG, jax.random.key(0))
    tokens, mask = _prompts()
    s = sampling.SamplingConfig(
        max_new_tokens=10, temperature=1.0, top_k=20, chunk=4, eos_ids=(3, 4), kv_dtype="float32"
    )
    key = jax.random.key(5)
    ref = jax.device_get(sampling.generate(params, tokens, mask, key, cfg=CFG, s=s, group_size=2))
    assert len(set(ref["length"].tolist())) >= 3
    s5 = dataclasses.replace(s, prefill_chunk=5)
    out = jax.device_get(sampling.generate(params, tokens, mask, key, cfg=CFG, s=s5, group_size=2))
    for k in ("tokens", "mask", "length"):
        np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    np.testing.assert_allclose(out["logp"], ref["logp"], atol=1e-5, rtol=0)


def test_prefill_chunk_from_the_config_and_its_errors():
    class Tok:
        eos_ids, pad_id = (2,), 0

        def encode(self, t):
            return [5]

    section = dict(max_new_tokens=8, temperature=1.0, top_p=1.0, top_k=0, chunk=4)
    assert rollout.sampling_config({**section, "prefill_chunk": 512}, Tok()).prefill_chunk == 512
    with pytest.raises(ConfigError, match=r"config.sampling.prefill_chunk=-1"):
        rollout.sampling_config({**section, "prefill_chunk": -1}, Tok())
    with pytest.raises(ValueError, match="prefill_chunk"):
        sampling.SamplingConfig(prefill_chunk=-2)
