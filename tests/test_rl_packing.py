"""The packed RL learner (r1jax.rl.experience.pack, r1jax.stages.grpo.put_rows): a packed update
equals the padded one for every loss variant (loss, gradients, new parameters), packed scoring
equals padded scoring, and a long-response rollout (8k tokens, EOS disabled) trains packed."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hf_utils import micro_config

from r1jax import sampling, update
from r1jax import sharding as shd
from r1jax.data import packing
from r1jax.models import get_preset, init_params
from r1jax.rl import experience, losses, objective
from r1jax.stages import grpo

CFG = micro_config(d_ff=64)
P, T, N = 8, 6, 16


def _rows(seed=0):
    """N training rows as GRPO makes them: left-padded prompts, completions of 1..T tokens."""
    rng = np.random.default_rng(seed)
    p_len, c_len = rng.integers(1, P + 1, N), rng.integers(1, T + 1, N)
    attn = np.zeros((N, P + T), np.int32)
    for i in range(N):
        attn[i, P - p_len[i] : P + c_len[i]] = 1
    mask = attn[:, P:].copy()
    tokens = rng.integers(1, CFG.vocab_size, (N, P + T)).astype(np.int32) * attn
    logp = -rng.uniform(0.5, 4.0, (N, T)).astype(np.float32) * mask

    def near(scale):
        return (logp + rng.normal(0, scale, (N, T))).astype(np.float32) * mask

    return {
        "tokens": tokens,
        "attn": attn,
        "mask": mask,
        "sampler_logp": near(0.2),
        "old_logp": near(0.3),
        "ref_logp": near(0.3),
        "adv": rng.normal(0, 1, N).astype(np.float32),
    }


VARIANTS = {
    "grpo": losses.LossConfig("grpo", beta=0.04),
    "dr_grpo": losses.LossConfig("dr_grpo", beta=0.04),
    "dapo": losses.LossConfig("dapo", beta=0.04, kl_bias_correction=True),
    "gspo": losses.LossConfig("gspo", beta=0.04, epsilon_low=0.05, epsilon_high=0.08),
    "grpo_tis": losses.LossConfig("grpo", beta=0.04, is_correction="tis", is_threshold=1.1),
    "dapo_mis_tok": losses.LossConfig(
        "dapo", beta=0.04, is_correction="mis", is_level="token", is_threshold=1.2
    ),
    "gspo_mis": losses.LossConfig("gspo", beta=0.04, is_correction="mis", is_threshold=1.5),
}
MODEL_KW = dict(cfg=CFG, prompt_len=P, temperature=1.0, vocab_chunk=16)


def _all_variants_loss(params, mb, ctx):
    """The sum of every variant's GRPO loss (the model run once): one compiled update checks
    them all (each variant alone: test_policy_loss_on_packed_rows_equals_padded_rows)."""
    logp, _ = objective._completion_logprobs(params, mb, **MODEL_KW)
    extra = {"segment_ids_NT": mb["seg"]} if "seg" in mb else {}
    total, metrics = 0.0, {}
    for name, c in VARIANTS.items():
        is_kw = {"sampler_logp_NT": mb["sampler_logp"]} if c.is_correction != "none" else {}
        loss, m = losses.policy_loss(
            logp, mb["old_logp"], mb["ref_logp"], mb["adv"], mb["mask"], mb[f"weight_{name}"], c,
            **extra, **is_kw,
        )  # fmt: skip
        total += loss
        if c.is_correction != "none":
            metrics[f"is_masked_frac_{name}"] = m["is_masked_frac"]
    return total, metrics


def _all_weights(batch, num_sequences=None):
    out = dict(batch)
    for name, c in VARIANTS.items():
        w = objective.token_weights(
            batch, loss_type=c.loss_type, max_len=T, num_sequences=num_sequences
        )[0]["weight"]
        out[f"weight_{name}"] = w
    return out, {}


def _update(mesh, rows, row_len, micro):
    batch, sh, _ = grpo.put_rows(mesh, rows, row_len, micro)
    params = init_params(CFG, jax.random.key(0), mesh)
    state = update.init_state(params, optax.sgd(1.0), mesh)
    prepare = functools.partial(_all_weights, num_sequences=N if row_len else None)
    step = update.make_train_step(
        _all_variants_loss, optax.sgd(1.0), state_shardings=update.shardings_of(state),
        batch_shardings=sh, prepare=prepare, skip_empty="mask" if row_len else None,
    )  # fmt: skip
    new, metrics = step(state, batch)
    return jax.device_get(new["params"]), jax.device_get(metrics), batch


def test_packed_update_equals_padded_update_for_every_variant():
    """Loss, gradients and new parameters (SGD(1.0): new = old - gradient) of one update on
    packed rows equal those on padded rows, for every loss variant with a KL term, plain and
    with TIS/MIS. Packed: 20-token rows, one per micro-batch; the 7 rows are rounded up to 8
    micro-batches, the last one empty and skipped. Padded: 2 micro-batches of 8 rows."""
    mesh = shd.make_mesh((("fsdp", 1),))
    rows = _rows()
    want_p, want_m, _ = _update(mesh, rows, 0, 8)
    got_p, got_m, batch = _update(mesh, rows, 20, 1)
    assert batch["tokens"].shape[:2] == (8, 1) and not np.asarray(batch["mask"][-1]).any()
    init = jax.device_get(init_params(CFG, jax.random.key(0)))
    for a, b, p0 in zip(*(jax.tree.leaves(x) for x in (got_p, want_p, init))):
        # Gradients to 1e-5 relative, up to the fp32 rounding of adding them to parameters of
        # magnitude up to ~1.5 (norm weights: 2 ulp = 2.4e-7 each side).
        np.testing.assert_allclose(a - p0, b - p0, rtol=1e-5, atol=5e-7)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    for k, v in want_m.items():
        if k != "skipped":
            np.testing.assert_allclose(got_m[k], v, rtol=1e-5, atol=1e-7, err_msg=k)
    assert want_m["grad_norm"] > 0
    for k in ("grpo_tis", "dapo_mis_tok", "gspo_mis"):
        assert 0 < want_m[f"is_masked_frac_{k}"] < 1, k  # the correction acts on these inputs


@pytest.mark.parametrize("name", list(VARIANTS))
def test_policy_loss_on_packed_rows_equals_padded_rows(name):
    """Value and gradient with respect to each log-prob, per variant, in both layouts."""
    c, rows = VARIANTS[name], _rows(2)
    rows["logp"] = (rows["sampler_logp"] + 0.1 * rows["mask"]).astype(np.float32)
    packed, index = experience.pack(rows, 20)

    def value_and_grad(b, **kw):
        w = objective.token_weights(b, loss_type=c.loss_type, max_len=T, **kw)[0]["weight"]
        extra = {"segment_ids_NT": b["seg"]} if "seg" in b else {}
        extra |= {"sampler_logp_NT": b["sampler_logp"]} if c.is_correction != "none" else {}

        def f(logp):
            return losses.policy_loss(
                logp, b["old_logp"], b["ref_logp"], b["adv"], b["mask"], w, c, **extra
            )[0]

        return jax.jit(jax.value_and_grad(f))(b["logp"])

    want, want_g = value_and_grad({k: jnp.asarray(v) for k, v in rows.items()})
    got, got_g = value_and_grad({k: jnp.asarray(v) for k, v in packed.items()}, num_sequences=N)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    assert abs(float(want)) > 1e-3 and np.abs(want_g).max() > 1e-3
    np.testing.assert_allclose(experience.unpack(np.asarray(got_g), index, T), want_g, atol=1e-8)


def test_packed_scoring_round_trips_to_padded_rows():
    mesh = shd.make_mesh((("fsdp", 2),))
    rows = {k: v for k, v in _rows(1).items() if k in ("tokens", "attn", "mask")}
    fn = functools.partial(
        objective.frozen_logprobs, cfg=CFG, prompt_len=P, temperature=1.0, vocab_chunk=16
    )
    params = init_params(CFG, jax.random.key(1), mesh)
    out = []
    for row_len, micro in ((0, 8), (P + T + 3, 2)):
        batch, sh, index = grpo.put_rows(mesh, rows, row_len, micro)
        scorer = update.make_scorer(
            fn, param_shardings=update.shardings_of(params), batch_shardings=sh,
            skip_empty="mask" if row_len else None,
        )  # fmt: skip
        logp = update.unsplit(scorer(params, batch))
        out.append(experience.unpack(logp, index, T) if index else logp)
    np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-5)
    assert np.all(out[0][rows["mask"] == 0] == 0) and np.all(out[0][rows["mask"] > 0] < 0)


def test_pack_layout_by_hand():
    rows = {
        "tokens": np.array([[0, 5, 6, 7, 8, 0], [9, 1, 2, 3, 0, 0]], np.int32),
        "attn": np.array([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], np.int32),
        "mask": np.array([[1, 1, 0], [1, 0, 0]], np.int32),
        "adv": np.array([0.5, -2.0], np.float32),
    }
    packed, index = experience.pack(rows, 8)  # 2 + 2 and 3 + 1 tokens: one row
    np.testing.assert_array_equal(packed["tokens"], [[5, 6, 7, 8, 9, 1, 2, 3]])
    np.testing.assert_array_equal(packed["segment_ids"], [[1, 1, 1, 1, 2, 2, 2, 2]])
    np.testing.assert_array_equal(packed["positions"], [[0, 1, 2, 3, 0, 1, 2, 3]])
    # Loss column j scores token j + 1: tokens 7, 8 (segment 1) and 3 (segment 2).
    np.testing.assert_array_equal(packed["seg"], [[0, 1, 1, 0, 0, 0, 2]])
    np.testing.assert_array_equal(packed["adv"], [[0, 0.5, 0.5, 0, 0, 0, -2.0]])
    np.testing.assert_array_equal(experience.unpack(packed["mask"], index, 3), rows["mask"])
    row, off, n = packing.assign_rows([3, 5, 2, 4], 8, first_fit=True)
    assert n == 2 and list(row) == [0, 0, 1, 1] and list(off) == [5, 0, 4, 0]
    with pytest.raises(ValueError, match="example 1: 9 tokens"):
        packing.assign_rows([3, 9], 8)
    assert [grpo.count_bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8] + [12] * 4 + [
        16
    ]


def test_long_responses_train_packed():
    """Budget ~20 s on 2 cores: a 1-layer model (width 16) with EOS disabled samples 2
    completions of 8,192 tokens; one packed update (one 8,208-token row per micro-batch) has the
    loss of the padded rows, and its log-probs equal the sampler's at every position."""
    cfg = get_preset(
        "tiny", d_model=16, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=8, d_ff=32,
        vocab_size=32, init_std=0.1, remat=False, unroll_decode=False,
    )  # fmt: skip
    G, L, Pp = 2, 8192, 16
    s = sampling.SamplingConfig(max_new_tokens=L, temperature=1.0, chunk=512, eos_ids=())
    params = init_params(cfg, jax.random.key(0))
    prompt, pmask = sampling.pad_prompts([[3, 4, 5, 6, 7]], 0, Pp)
    out = jax.device_get(sampling.generate(params, prompt, pmask, jax.random.key(1), cfg=cfg, s=s,
                                           group_size=G))  # fmt: skip
    assert np.all(out["length"] == L) and np.all(out["truncated"])
    rows = experience.make_rows(prompt, pmask, out, G)
    rows["adv"] = np.array([1.0, -0.25], np.float32)
    noise = np.random.default_rng(0).normal(0, 0.1, rows["mask"].shape).astype(np.float32)
    rows["ref_logp"] = (rows["sampler_logp"] + noise) * rows["mask"]  # the KL term reads logp
    mesh = shd.make_mesh((("fsdp", 1),))
    c = losses.LossConfig("grpo", beta=0.04)
    batch, sh, _ = grpo.put_rows(mesh, rows, Pp + L, 1)
    loss = functools.partial(
        objective.grpo_loss, cfg=cfg, loss_cfg=c, policy_loss=losses.policy_loss,
        prompt_len=Pp, temperature=1.0, vocab_chunk=64,
    )  # fmt: skip
    prepare = functools.partial(objective.token_weights, loss_type="grpo", max_len=L,
                                num_sequences=G)  # fmt: skip
    state = update.init_state(params, optax.sgd(1e-3), mesh)
    step = update.make_train_step(
        loss, optax.sgd(1e-3), state_shardings=update.shardings_of(state), batch_shardings=sh,
        prepare=prepare, skip_empty="mask",
    )  # fmt: skip
    # The padded reference: the loss function on the padded rows, forward only (before the
    # update, which donates the parameters).
    b = {k: jnp.asarray(v) for k, v in rows.items()}
    b["weight"] = losses.token_weights(b["mask"], "grpo")
    want = jax.jit(lambda p, b: loss(p, b, {}))(params, b)[0]
    _, m = step(state, batch)
    np.testing.assert_allclose(m["loss"], want, rtol=1e-5, atol=1e-7)
    assert m["sampler_logp_gap_max"] < 1e-4 and m["grad_norm"] > 0 and m["kl"] > 1e-3


def test_config_errors_name_the_field():
    from r1jax.configs import load
    from r1jax.errors import ConfigError

    c = load("r1zero")
    c.rl.update(pack=True, pack_len=32)
    with pytest.raises(ConfigError, match="config.rl.pack_len"):
        grpo.validate(c)
    c.rl.update(pack_len=0, micro_tokens=100)
    with pytest.raises(ConfigError, match="config.rl.micro_tokens"):
        grpo.validate(c)
    c.rl.update(micro_tokens=0, is_correction="mis", is_level="token", loss_type="gspo")
    with pytest.raises(ConfigError, match="is_level"):
        grpo.validate(c)
