"""The continuous (slot-refill) decoder against the static decoder, its reference."""

import dataclasses

import jax
import numpy as np
import pytest
from hf_utils import left_padded_batch, micro_config

from r1jax import continuous, rollout, sampling
from r1jax import sharding as shd
from r1jax.models import init_params
from r1jax.models import transformer as tfm

CFG = micro_config()
G = 4


@pytest.fixture(scope="module")
def setup():
    params = init_params(CFG, jax.random.key(0))
    tokens, mask = left_padded_batch(np.random.default_rng(0), CFG.vocab_size, [7, 3, 12], 16)
    return params, tokens, mask


def _run(decode, params, tokens, mask, s, cfg=CFG, end_at=None):
    out = decode(params, tokens, mask, jax.random.key(5), end_at, cfg=cfg, s=s, group_size=G)
    return jax.device_get(out)


def _assert_same(out, ref):
    for k in ("tokens", "mask", "length", "truncated"):
        np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    np.testing.assert_allclose(out["logp"], ref["logp"], atol=1e-5, rtol=0)


def test_equals_static_for_any_slot_count_and_batch(setup):
    """Same tokens and log-probs at 1 slot, 3 slots (refilled at uneven times) and one slot per
    row; with the third prompt removed, the rows of the first two are unchanged (per-row keys:
    a completion depends on its seed, prompt and sample index only)."""
    params, tokens, mask = setup
    # Three end tokens (each drawn ~1/61 per step) and stop sequences end rows at many lengths.
    s = sampling.SamplingConfig(
        max_new_tokens=18,
        temperature=1.0,
        top_k=20,
        top_p=0.95,
        chunk=4,
        eos_ids=(3, 4, 5),
        stop_sequences=((7, 8), (9,)),
    )
    ref = _run(sampling.generate, params, tokens, mask, s)
    assert len(set(ref["length"].tolist())) >= 4 and ref["truncated"].any()
    assert np.abs(ref["logp"]).max() > 1.0
    for slots in (1, 3 * G):
        out = _run(continuous.generate, params, tokens, mask, dataclasses.replace(s, slots=slots))
        _assert_same(out, ref)
    sub = _run(continuous.generate, params, tokens[:2], mask[:2], dataclasses.replace(s, slots=3))
    _assert_same(sub, {k: v[: 2 * G] for k, v in ref.items()})


def test_lazy_grouped_prefill_equals_static(setup):
    """Prompts prefilled inside the decode loop (prefill_group): one at a time with 3 slots;
    two at a time (3 prompts padded to 4 with an empty one) with 5 slots, per-layer (unrolled)
    weights and a chunked prefill. Slots idle while their next rows' prompts are not prefilled,
    which changes when rows start but not what they draw: the static decoder's rows.
    Cost: 9 s (load average ~5; three compiles of small programs)."""
    params, tokens, mask = setup
    s = sampling.SamplingConfig(
        max_new_tokens=14, temperature=1.0, top_k=20, chunk=4, eos_ids=(3, 4, 5)
    )
    ref = _run(sampling.generate, params, tokens, mask, s)
    assert len(set(ref["length"].tolist())) >= 4
    lazy = dataclasses.replace(s, slots=3, prefill_group=1)
    _assert_same(_run(continuous.generate, params, tokens, mask, lazy), ref)
    lazy2 = dataclasses.replace(s, slots=5, prefill_group=2, prefill_chunk=5)
    cfg = CFG.replace(unroll_decode=True)
    _assert_same(_run(continuous.generate, params, tokens, mask, lazy2, cfg), ref)


def test_greedy_with_forced_lengths_and_unrolled_layers(setup):
    params, tokens, mask = setup
    s = sampling.SamplingConfig(max_new_tokens=12, temperature=0.0, chunk=5, eos_ids=(60,))
    end_at = np.array([1, 12, 3, 2, 9, 5, 11, 4, 6, 12, 2, 7], np.int32)
    ref = _run(sampling.generate, params, tokens, mask, s, end_at=end_at)
    # The injected EOS ends a row at its forced length, or the model's own argmax earlier.
    assert np.all(ref["length"] <= end_at) and (ref["length"] == end_at).sum() >= 10
    cfg = CFG.replace(unroll_decode=True)
    s3 = dataclasses.replace(s, slots=3)
    _assert_same(_run(continuous.generate, params, tokens, mask, s3, cfg, end_at), ref)


def test_decoder_settings_from_the_config_and_their_errors():
    class Tok:
        eos_ids, pad_id = (2,), 0

    section = dict(max_new_tokens=8, temperature=1.0, top_p=1.0, top_k=0, chunk=4)
    section.update(decoder="continuous", slots=6, kv_dtype="bfloat16")
    s = rollout.sampling_config(section, Tok())
    assert (s.decoder, s.slots, sampling.kv_dtype(s)) == ("continuous", 6, np.dtype("bfloat16"))
    assert sampling.kv_dtype(sampling.SamplingConfig()) == np.float32  # auto on CPU
    with pytest.raises(ValueError, match="decoder"):
        sampling.SamplingConfig(decoder="paged")
    with pytest.raises(ValueError, match="kv_dtype"):
        sampling.SamplingConfig(kv_dtype="fp8")


def test_rollout_runs_the_configured_decoder_over_a_mesh(setup, monkeypatch):
    """decoder="continuous" reaches continuous.generate through rollout.generate, with sharded
    weights and prompts (8 devices), and gives the single-device static decoder's rows."""
    params, tokens, mask = setup
    calls = []
    orig = continuous.generate
    monkeypatch.setattr(continuous, "generate", lambda *a, **k: calls.append(1) or orig(*a, **k))
    s = sampling.SamplingConfig(max_new_tokens=6, chunk=3, eos_ids=(3, 4, 5), top_k=30)
    ref = _run(sampling.generate, params, tokens[:2], mask[:2], s)
    mesh = shd.make_mesh((("fsdp", 4), ("tensor", 2)))
    p8 = jax.device_put(params, tfm.param_shardings(CFG, mesh))
    s = dataclasses.replace(s, decoder="continuous", slots=3)
    kw = dict(mesh=mesh, num_prompts=2, group_size=G)
    out = rollout.generate(p8, CFG, s, tokens[:2], mask[:2], jax.random.key(5), **kw)
    assert calls
    _assert_same(out, ref)
