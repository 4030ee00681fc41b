"""The group sampler against full-forward decoding, the trainer's log-probs, and its contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_utils import left_padded_batch

from r1jax import sampling
from r1jax import sharding as shd
from r1jax.models import (
    forward,
    get_preset,
    init_params,
    logits,
    positions_from_mask,
    token_logprobs,
)
from r1jax.models import transformer as tfm

CFG = get_preset(
    "tiny",
    d_model=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    d_ff=96,
    vocab_size=97,
    init_std=0.1,
)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def _prompts(seed=0, lengths=(7, 3, 12)):
    return left_padded_batch(np.random.default_rng(seed), CFG.vocab_size, list(lengths), 16)


# unroll_decode: the decode loop over per-layer weights instead of a scan over the stack.
@pytest.mark.parametrize("unroll", [False, True])
def test_greedy_equals_argmax_of_full_forward(params, unroll):
    tokens, mask = _prompts()
    s = sampling.SamplingConfig(max_new_tokens=12, temperature=0.0, chunk=5)
    cfg = CFG.replace(unroll_decode=unroll)
    out = sampling.generate(params, tokens, mask, jax.random.key(0), cfg=cfg, s=s, group_size=2)
    seq, m = np.repeat(tokens, 2, 0), np.repeat(mask, 2, 0)
    for _ in range(12):  # no cache: the whole sequence is recomputed for every new token
        nxt = np.asarray(logits(params, seq, m, CFG))[:, -1].argmax(-1)
        seq, m = (
            np.concatenate([seq, nxt[:, None]], 1),
            np.concatenate([m, np.ones_like(m[:, :1])], 1),
        )
    np.testing.assert_array_equal(out["tokens"], seq[:, 16:])
    assert np.all(out["mask"] == 1) and np.all(out["truncated"])


@pytest.mark.parametrize("unroll", [False, True])
def test_sampler_logprobs_equal_trainer_logprobs(params, unroll):
    tokens, mask = _prompts(1)
    s = sampling.SamplingConfig(max_new_tokens=20, temperature=1.0, chunk=8)
    cfg = CFG.replace(unroll_decode=unroll)
    out = sampling.generate(params, tokens, mask, jax.random.key(3), cfg=cfg, s=s, group_size=4)
    full = np.concatenate([np.repeat(tokens, 4, 0), out["tokens"]], 1)
    fmask = np.concatenate([np.repeat(mask, 4, 0), out["mask"]], 1)
    h = forward(params, full, positions_from_mask(fmask), fmask, CFG)
    lp, _ = token_logprobs(params, h[:, 15:-1], full[:, 16:], CFG)
    assert np.abs(out["logp"]).max() > 1.0
    np.testing.assert_allclose(out["logp"], np.asarray(lp) * out["mask"], atol=1e-5, rtol=0)


def _kept_set(logits_V, top_k, top_p):
    order = np.argsort(-logits_V, kind="stable")
    keep = order[:top_k] if top_k else order
    p = np.exp(logits_V[keep] - logits_V[keep].max())
    p /= p.sum()
    before = np.cumsum(p) - p
    return set(keep[before < top_p].tolist())


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.7), (8, 0.9), (1, 1.0)])
def test_top_k_top_p_never_leave_the_kept_set(top_k, top_p):
    rng = np.random.default_rng(top_k)
    logits_NV = rng.normal(0, 2.0, (4, 50)).astype(np.float32)
    s = sampling.SamplingConfig(temperature=1.0, top_k=top_k, top_p=top_p)
    # Each draw: one key per row.
    pick = lambda k: sampling._pick(jax.random.split(k, 4), jnp.asarray(logits_NV), s)[0]  # noqa: E731
    draw = jax.jit(jax.vmap(pick))
    toks = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))  # [draws, N]
    for n in range(4):
        kept = _kept_set(logits_NV[n], top_k, top_p)
        seen = set(toks[:, n].tolist())
        assert seen <= kept
        assert seen == kept  # and nothing that should be kept is cut (4000 draws suffice here)


def test_group_shares_one_prefill(params, monkeypatch):
    seen = []
    orig = tfm.prefill

    def spy(p, tokens, mask, cfg):
        seen.append(tokens.shape)
        return orig(p, tokens, mask, cfg)

    monkeypatch.setattr(tfm, "prefill", spy)
    tokens, mask = _prompts(2)
    s = sampling.SamplingConfig(max_new_tokens=4, chunk=4, top_k=3)  # a fresh compile
    out = sampling.generate(params, tokens, mask, jax.random.key(0), cfg=CFG, s=s, group_size=8)
    assert seen == [(3, 16)]  # B prompts, not B*G rows
    assert out["tokens"].shape == (24, 4)


def test_eos_and_stop_sequence_end_rows_and_mask_the_rest(params):
    tokens, mask = _prompts(3)
    s0 = sampling.SamplingConfig(max_new_tokens=24, temperature=1.0, chunk=4)
    free = np.asarray(
        sampling.generate(params, tokens, mask, jax.random.key(7), cfg=CFG, s=s0, group_size=4)[
            "tokens"
        ]
    )
    eos = int(np.bincount(free[:, 2:].ravel()).argmax())  # a token the model does emit
    stop = (int(free[0, 5]), int(free[0, 6]))
    s = sampling.SamplingConfig(
        max_new_tokens=24,
        temperature=1.0,
        chunk=4,
        eos_ids=(eos,),
        stop_sequences=(stop,),
        pad_id=0,
    )
    out = jax.device_get(
        sampling.generate(params, tokens, mask, jax.random.key(7), cfg=CFG, s=s, group_size=4)
    )
    # Same key, same draws up to each row's end: the free run tells where each row must stop.
    for n in range(12):
        ends = [t for t in range(24) if free[n, t] == eos]
        ends += [t for t in range(1, 24) if (free[n, t - 1], free[n, t]) == stop]
        end = min(ends, default=None)
        length = 24 if end is None else end + 1
        assert out["length"][n] == length
        assert out["truncated"][n] == (end is None)
        np.testing.assert_array_equal(out["tokens"][n, :length], free[n, :length])
        assert np.all(out["tokens"][n, length:] == 0) and np.all(out["mask"][n, length:] == 0)
        assert np.all(out["logp"][n, length:] == 0) and np.all(out["mask"][n, :length] == 1)
    assert not out["truncated"].all()


def test_compilations_bounded_across_prompt_lengths(params):
    s = sampling.SamplingConfig(max_new_tokens=3, chunk=3, top_p=0.99)
    before = sampling.generate._cache_size()
    for n in (3, 5, 9, 14, 16, 17, 30):
        ids = [list(range(1, n + 1)), list(range(2, n))]
        tokens, mask = sampling.pad_prompts(ids, 0)
        sampling.generate(params, tokens, mask, jax.random.key(n), cfg=CFG, s=s, group_size=2)
    assert sampling.generate._cache_size() - before == 2  # buckets 16 and 32


@pytest.mark.parametrize("unroll", [False, True])
def test_sharded_sampling_equals_single_device(params, unroll):
    mesh = shd.make_mesh((("fsdp", 4), ("tensor", 2)))
    p8 = jax.device_put(params, tfm.param_shardings(CFG, mesh))
    tokens, mask = left_padded_batch(np.random.default_rng(4), CFG.vocab_size, [5, 9, 2, 16], 16)
    s = sampling.SamplingConfig(max_new_tokens=8, temperature=0.0, chunk=4)
    ref = sampling.generate(params, tokens, mask, jax.random.key(1), cfg=CFG, s=s, group_size=2)
    batch = shd.batch_sharding(mesh, 2, 4)
    out = sampling.generate(
        p8,
        jax.device_put(tokens, batch),
        jax.device_put(mask, batch),
        jax.random.key(1),
        cfg=CFG.replace(unroll_decode=unroll),
        s=s,
        group_size=2,
    )
    assert len(out["tokens"].sharding.device_set) == 8
    np.testing.assert_array_equal(out["tokens"], ref["tokens"])
    np.testing.assert_allclose(out["logp"], ref["logp"], atol=1e-5)
