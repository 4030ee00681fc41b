"""Policy losses: values and gradients against an independent NumPy implementation, exact
micro-batch accumulation, and parity with TRL's GRPOTrainer (golden file, TRL not needed)."""

import dataclasses
import json
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl.losses import (
    LossConfig,
    finalize_metrics,
    kl_estimate,
    loss_config_from,
    merge_metrics,
    policy_loss,
    token_weights,
)

N, T, MAX_LEN = 8, 6, 8
GOLDEN = Path(__file__).parent / "golden" / "trl_losses.json"


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([6, 3, 1, 5, 0, 6, 2, 4])
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    logp = rng.uniform(-3.0, -0.05, (N, T)).astype(np.float32)
    old = (logp - rng.uniform(-0.6, 0.6, (N, T))).astype(np.float32)  # ratios 0.55..1.8
    old[1, 0] = logp[1, 0] - 1.5  # ratio 4.5 on a negative-advantage token (dual clip)
    ref = (logp + rng.uniform(-0.4, 0.4, (N, T))).astype(np.float32)
    adv = np.array([1.2, -0.7, 0.0, -0.5, 0.9, -1.1, 0.4, -0.2], np.float32)
    return logp, old, ref, adv, mask


def np_kl(logp, ref, est):
    x = ref - logp
    return {"k1": -x, "k2": 0.5 * x**2, "k3": np.exp(x) - x - 1}[est]


def np_is_weights(trainer, sampler, mask, c):
    """TIS/MIS weights [N, T] and the (ratio, changed) of each unit, with loops, float64."""
    w, units = np.zeros(mask.shape), []
    lo, hi = c.is_threshold_low, c.is_threshold
    for i in range(mask.shape[0]):
        toks = [t for t in range(mask.shape[1]) if mask[i, t]]
        groups = [toks] if c.is_level == "sequence" and toks else [[t] for t in toks]
        for g in groups:
            rho = np.exp(np.clip(sum(float(trainer[i, t]) - sampler[i, t] for t in g), -20, 20))
            v = min(max(rho, lo), hi) if c.is_correction == "tis" else float(lo <= rho <= hi)
            w[i, g] = v
            units.append((rho, v != rho if c.is_correction == "tis" else v == 0.0))
    return w, units


def np_loss(logp, old, ref, adv, mask, c, sampler=None):
    """The objectives written out per sequence with loops, float64."""
    logp, old, ref = (np.asarray(a, np.float64) for a in (logp, old, ref))
    is_w = np.ones(mask.shape)
    if c.is_correction != "none":  # the trainer's probability is the old policy's
        is_w = np_is_weights(old, np.asarray(sampler, np.float64), mask, c)[0]
    lo, hi = 1 - c.epsilon_low, 1 + c.epsilon_high
    n_seq, n_tok = logp.shape
    total_tokens = mask.sum()
    loss = 0.0
    for i in range(n_seq):
        toks = [t for t in range(n_tok) if mask[i, t]]
        a = float(adv[i])
        kl = [np_kl(logp[i, t], ref[i, t], c.kl_estimator) for t in toks] if c.beta else []
        if c.loss_type == "gspo":
            if not toks:
                continue
            s = np.exp(min(np.mean([logp[i, t] - old[i, t] for t in toks]), c.max_log_ratio))
            kl = [k * s for k in kl] if c.kl_bias_correction else kl
            seq = -min(s * a, np.clip(s, lo, hi) * a) * is_w[i, toks[0]]
            seq += c.beta * (np.mean(kl) if kl else 0.0)
            loss += seq / n_seq
            continue
        per_tok = []
        for j, t in enumerate(toks):
            r = np.exp(logp[i, t] - old[i, t])
            pg = -min(r * a, np.clip(r, lo, hi) * a)
            if c.dual_clip is not None and a < 0:
                pg = min(pg, -c.dual_clip * a)
            pg *= is_w[i, t]
            k = (kl[j] * (r if c.kl_bias_correction else 1.0)) if kl else 0.0
            per_tok.append(pg + c.beta * k)
        if c.loss_type == "grpo":
            loss += sum(per_tok) / max(len(toks), 1) / n_seq
        elif c.loss_type == "dr_grpo":
            loss += sum(per_tok) / (n_seq * MAX_LEN)
        else:
            loss += sum(per_tok) / total_tokens
    return loss


def np_grad(logp, old, ref, adv, mask, c, sampler=None, h=1e-6):
    """Central finite differences of np_loss in float64."""
    x = np.asarray(logp, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = np_loss(xp, old, ref, adv, mask, c, sampler) - np_loss(
            xm, old, ref, adv, mask, c, sampler
        )
        g[idx] /= 2 * h
    return g


# LossConfig is hashable: a static argument, so one compile per (config, shapes).
_value_and_grad = jax.jit(jax.value_and_grad(policy_loss, has_aux=True), static_argnums=6)


def jax_loss_and_grad(logp, old, ref, adv, mask, c, weights=None, sampler=None):
    w = token_weights(mask, c, max_len=MAX_LEN) if weights is None else weights
    kw = {} if sampler is None else {"sampler_logp_NT": sampler}
    (loss, metrics), grad = _value_and_grad(logp, old, ref, adv, mask, w, c, **kw)
    return float(loss), np.asarray(grad), metrics


CONFIGS = [
    LossConfig("grpo"),  # beta 0.04, k3
    LossConfig("grpo", beta=0.1, kl_estimator="k1"),
    LossConfig("grpo", beta=0.1, kl_estimator="k2", dual_clip=3.0),
    LossConfig("dr_grpo"),
    LossConfig("dr_grpo", beta=0.05),
    LossConfig("dapo"),
    LossConfig("dapo", beta=0.04, kl_estimator="k2", kl_bias_correction=True),
    LossConfig("gspo", epsilon_low=0.05, epsilon_high=0.08),  # sequence ratios in and out of range
    LossConfig("gspo", beta=0.04, kl_bias_correction=True),
]


def _id(c):
    return f"{c.loss_type}-b{c.beta}-{c.kl_estimator}" + ("-corr" if c.kl_bias_correction else "")


@pytest.mark.parametrize("c", CONFIGS, ids=_id)
def test_value_and_grad_against_numpy(c):
    logp, old, ref, adv, mask = make_batch()
    loss, grad, _ = jax_loss_and_grad(logp, old, ref, adv, mask, c)
    np.testing.assert_allclose(loss, np_loss(logp, old, ref, adv, mask, c), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(grad, np_grad(logp, old, ref, adv, mask, c), rtol=1e-4, atol=2e-6)
    assert np.all(grad[mask == 0] == 0)


IS_CONFIGS = [
    LossConfig("grpo", is_correction="tis"),  # token level, C = 2 (verl)
    LossConfig("grpo", is_correction="tis", is_level="sequence", is_threshold=1.5),
    LossConfig("dapo", is_correction="tis", is_threshold=1.2, is_threshold_low=0.8),
    LossConfig("dr_grpo", beta=0.04, is_correction="mis", is_level="token", is_threshold=1.3),
    LossConfig("grpo", is_correction="mis"),  # sequence level, band [0, 3] (TRL)
    LossConfig("dapo", is_correction="mis", is_threshold_low=0.5),
    LossConfig("gspo", epsilon_low=0.05, epsilon_high=0.08, is_correction="mis"),
    LossConfig("gspo", beta=0.04, is_correction="tis", is_level="sequence", is_threshold=1.5),
]


def _is_id(c):
    return f"{c.loss_type}-{c.is_correction}-{c.is_level}-{c.is_threshold}-{c.is_threshold_low}"


@pytest.mark.parametrize("c", [IS_CONFIGS[i] for i in (0, 3, 5, 6)], ids=_is_id)
def test_is_correction_reduces_to_the_plain_loss_when_sampler_equals_trainer(c):
    """rho = 1 everywhere: TIS and MIS weights are exactly 1, off-policy (the trainer's
    probability is the old policy's) and on-policy (stop_gradient of the current one)."""
    logp, old, ref, adv, mask = make_batch()
    plain = dataclasses.replace(c, is_correction="none", is_level=None)
    for trainer, sampler in ((old, old), (None, logp)):
        want = jax_loss_and_grad(logp, trainer, ref, adv, mask, plain)
        got = jax_loss_and_grad(logp, trainer, ref, adv, mask, c, sampler=sampler)
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
        m = finalize_metrics(got[2])
        assert float(m["is_ratio_mean"]) == float(m["is_ratio_max"]) == 1.0
        assert float(m["is_masked_frac"]) == 0.0


@pytest.mark.parametrize("c", IS_CONFIGS, ids=_is_id)
def test_is_correction_against_numpy(c):
    logp, old, ref, adv, mask = make_batch(seed=5)
    rng = np.random.default_rng(6)
    # Sampler log-probs off by up to 0.5 per token, or 1.5 with a bias of 0.3 (odd rows): ratios
    # on both sides of every threshold.
    odd = (np.arange(N) % 2)[:, None]
    sampler = (old + rng.uniform(-0.5, 0.5, old.shape) * (1 + 2 * odd) - 0.3 * odd).astype(
        np.float32
    )
    loss, grad, metrics = jax_loss_and_grad(logp, old, ref, adv, mask, c, sampler=sampler)
    np.testing.assert_allclose(
        loss, np_loss(logp, old, ref, adv, mask, c, sampler), rtol=2e-6, atol=1e-7
    )
    want_g = np_grad(logp, old, ref, adv, mask, c, sampler)
    np.testing.assert_allclose(grad, want_g, rtol=1e-4, atol=2e-6)
    _, units = np_is_weights(old, sampler.astype(np.float64), mask, c)
    rho, changed = np.array([u[0] for u in units]), np.array([u[1] for u in units])
    assert 0 < changed.mean() < 1  # the thresholds cut these inputs
    got = finalize_metrics(metrics)
    np.testing.assert_allclose(got["is_ratio_mean"], rho.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["is_ratio_max"], rho.max(), rtol=1e-5)
    np.testing.assert_allclose(got["is_ratio_min"], rho.min(), rtol=1e-5)
    np.testing.assert_allclose(got["is_masked_frac"], changed.mean(), rtol=1e-5)


def test_clipping_regions_and_dual_clip_metrics():
    logp, old, ref, adv, mask = make_batch()
    c = LossConfig("grpo", beta=0.0, dual_clip=3.0)
    _, _, metrics = jax_loss_and_grad(logp, old, None, adv, mask, c)
    r, a, m = np.exp(logp - old), adv[:, None], mask > 0
    low, high = m & (r < 0.8) & (a < 0), m & (r > 1.2) & (a > 0)
    dual = m & (a < 0) & (-np.minimum(r * a, np.clip(r, 0.8, 1.2) * a) > -3.0 * a)
    assert low.sum() > 0 and high.sum() > 0 and dual.sum() == 1  # the inputs cover every region
    got = finalize_metrics(metrics)
    np.testing.assert_allclose(got["clip_frac_low"], low.sum() / m.sum(), rtol=1e-6)
    np.testing.assert_allclose(got["clip_frac_high"], high.sum() / m.sum(), rtol=1e-6)
    np.testing.assert_allclose(got["clip_frac"], (low | high).sum() / m.sum(), rtol=1e-6)
    np.testing.assert_allclose(got["dual_clip_frac"], dual.sum() / m.sum(), rtol=1e-6)
    np.testing.assert_allclose(got["ratio_max"], r[m].max(), rtol=1e-6)
    np.testing.assert_allclose(got["ratio_min"], r[m].min(), rtol=1e-6)
    np.testing.assert_allclose(got["ratio_mean"], r[m].mean(), rtol=1e-6)


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators(est):
    logp = np.array([-0.5, -2.0, -1.0, -3.0], np.float32)
    ref = np.array([-0.7, -1.0, -1.0, -0.2], np.float32)
    x = (ref - logp).astype(np.float64)
    want = {"k1": logp - ref, "k2": 0.5 * x**2, "k3": np.exp(x) - x - 1}[est]
    np.testing.assert_allclose(
        kl_estimate(jnp.asarray(logp), jnp.asarray(ref), est), want, rtol=1e-6
    )


def test_token_weights_hand_values():
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    np.testing.assert_allclose(token_weights(mask, "grpo"), [[1 / 4, 1 / 4, 0], [1 / 2, 0, 0]])
    np.testing.assert_allclose(token_weights(mask, "gspo"), [[1 / 4, 1 / 4, 0], [1 / 2, 0, 0]])
    np.testing.assert_allclose(token_weights(mask, "dapo"), [[1 / 3, 1 / 3, 0], [1 / 3, 0, 0]])
    np.testing.assert_allclose(token_weights(mask, "dr_grpo", max_len=4), mask / 8)
    np.testing.assert_allclose(token_weights(mask, "dapo", num_tokens=6.0), mask / 6)
    with pytest.raises(ValueError, match="max_len"):
        token_weights(mask, "dr_grpo")


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_microbatch_accumulation_is_exact(loss_type):
    logp, old, ref, adv, mask = make_batch(seed=3)
    c = LossConfig(loss_type, beta=0.04)
    w = token_weights(mask, c, max_len=MAX_LEN)  # once, over the full minibatch
    full_loss, full_grad, full_m = jax_loss_and_grad(logp, old, ref, adv, mask, c, w)
    w = np.asarray(w)
    acc_loss, acc_grad, acc_m = 0.0, [], None
    for s in np.array_split(np.arange(N), 4):  # 4 micro-batches with different token counts
        loss, grad, m = jax_loss_and_grad(logp[s], old[s], ref[s], adv[s], mask[s], c, w[s])
        acc_loss += loss
        acc_grad.append(grad)
        acc_m = m if acc_m is None else merge_metrics(acc_m, m)
    np.testing.assert_allclose(acc_loss, full_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(acc_grad), full_grad, rtol=1e-6, atol=1e-8)
    want, got = finalize_metrics(full_m), finalize_metrics(acc_m)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_scan_accumulation_with_stacked_metrics():
    # The train-step pattern: lax.scan over micro-batches, loss/grad summed in the carry, metrics
    # stacked as scan outputs and reduced by finalize_metrics.
    logp, old, ref, adv, mask = make_batch(seed=4)
    c = LossConfig("dapo", beta=0.04, dual_clip=3.0)
    w = token_weights(mask, c)
    full_loss, full_grad, full_m = jax_loss_and_grad(logp, old, ref, adv, mask, c, w)

    @jax.jit
    def accumulate(*arrays):
        micro = [a.reshape(4, N // 4, *a.shape[1:]) for a in arrays]

        def body(carry, xs):
            (loss, m), g = jax.value_and_grad(policy_loss, has_aux=True)(*xs, c)
            return (carry[0] + loss, carry[1]), (g, m)

        (loss, _), (g, m) = jax.lax.scan(body, (jnp.zeros(()), 0), micro)
        return loss, g.reshape(N, T), finalize_metrics(m)

    loss, grad, m = accumulate(logp, old, ref, adv, mask, w)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, full_grad, rtol=1e-6, atol=1e-8)
    for k, v in finalize_metrics(full_m).items():
        np.testing.assert_allclose(m[k], v, rtol=1e-6, atol=1e-7, err_msg=k)


def test_onpolicy_loss_value_and_reinforce_gradient():
    # old = stop_gradient(logp): ratio 1, loss = -sum_i A_i/N over non-empty sequences + beta*KL,
    # gradient = w * (-A + beta * dk3/dlogp) with dk3/dlogp = 1 - exp(ref - logp).
    logp, _, ref, adv, mask = make_batch()
    c = LossConfig("grpo", beta=0.04)
    loss, grad, metrics = jax_loss_and_grad(logp, None, ref, adv, mask, c)
    w = np.asarray(token_weights(mask, "grpo"))
    kl = np_kl(logp.astype(np.float64), ref, "k3")
    np.testing.assert_allclose(loss, (w * (-adv[:, None] + 0.04 * kl)).sum(), rtol=1e-6)
    want_grad = w * (-adv[:, None] + 0.04 * (1 - np.exp(ref - logp.astype(np.float64))))
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)
    got = finalize_metrics(metrics)
    assert float(got["ratio_mean"]) == 1.0 and float(got["clip_frac"]) == 0.0


def test_gspo_log_ratio_clamp_and_padding_garbage():
    logp, old, _, adv, mask = make_batch()
    c = LossConfig("gspo")
    old = old.copy()
    old[5, mask[5] > 0] = logp[5, mask[5] > 0] - 50.0  # mean log-ratio 50, clamped to 10
    bad = logp.copy()
    bad[mask == 0] = np.nan  # garbage in padding must not leak into value or gradient
    loss, grad, _ = jax_loss_and_grad(bad, old, None, adv, mask, c)
    np.testing.assert_allclose(loss, np_loss(logp, old, logp, adv, mask, c), rtol=2e-6)
    # A_5 < 0 and s = e^10: loss term e^10*|A|/N with zero gradient beyond the clamp.
    assert np.all(grad[5] == 0) and np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_config_validation_and_conversion():
    assert LossConfig("dapo").epsilon_high == 0.28 and LossConfig("dapo").beta == 0.0
    assert LossConfig("gspo").epsilon_low == 3e-4 and LossConfig("grpo").beta == 0.04
    ns = types.SimpleNamespace(loss_type="dapo", beta=0.01, epsilon_high=None, lr=1e-6)
    assert loss_config_from(ns) == LossConfig("dapo", beta=0.01)
    assert loss_config_from({"loss_type": "gspo"}) == LossConfig("gspo")
    for kwargs, field in [
        (dict(loss_type="ppo"), "loss_type"),
        (dict(kl_estimator="k4"), "kl_estimator"),
        (dict(epsilon_low=-0.1), "epsilon_low"),
        (dict(epsilon_high=float("nan")), "epsilon_high"),
        (dict(beta=-1.0), "beta"),
        (dict(dual_clip=1.0), "dual_clip"),
        (dict(is_correction="ratio"), "is_correction"),
        (dict(is_correction="tis", is_level="seq"), "is_level"),
        (dict(is_correction="tis", is_threshold=0.5), "is_threshold"),
        (dict(is_correction="mis", is_threshold_low=1.5), "is_threshold_low"),
        (dict(loss_type="gspo", is_correction="mis", is_level="token"), "is_level"),
    ]:
        with pytest.raises(ValueError, match=field):
            LossConfig(**kwargs)
    logp, old, _, adv, mask = make_batch()
    w = token_weights(mask, "grpo")
    with pytest.raises(ValueError, match="ref_logp_NT"):
        policy_loss(logp, old, None, adv, mask, w, LossConfig("grpo"))
    with pytest.raises(ValueError, match="adv_N"):
        policy_loss(logp, old, None, adv[:3], mask, w, LossConfig("dapo"))
    with pytest.raises(ValueError, match="sampler_logp_NT"):
        policy_loss(logp, old, None, adv, mask, w, LossConfig("dapo", is_correction="tis"))


# ---- TRL parity -----------------------------------------------------------------------------
# tests/golden/make_trl_golden.py ran TRL GRPOTrainer.compute_loss on 2 equal micro-batches
# (gradient_accumulation_steps=2, steps_per_generation=2, one process). TRL scales each micro-batch
# loss for accumulation itself, so the optimizer-step loss and gradient are the SUM over micro-
# batches: that sum is compared with our full-minibatch loss, and each TRL micro-batch loss with
# ours on the same slice using full-minibatch weights.

TRL_TO_OURS = {
    "grpo_beta": LossConfig("grpo", beta=0.04, epsilon_low=0.2, epsilon_high=0.2),
    "grpo_onpolicy": LossConfig("grpo", beta=0.04, epsilon_low=0.2, epsilon_high=0.2),
    "grpo_beta_biascorr": LossConfig("grpo", beta=0.04, kl_bias_correction=True),
    "grpo_onpolicy_biascorr": LossConfig("grpo", beta=0.04, kl_bias_correction=True),
    "dapo": LossConfig("dapo", beta=0.0, epsilon_low=0.2, epsilon_high=0.28),
    "dapo_beta": LossConfig("dapo", beta=0.04, epsilon_low=0.2, epsilon_high=0.28),
    "dr_grpo": LossConfig("dr_grpo", beta=0.0, epsilon_low=0.2, epsilon_high=0.2),
    "gspo": LossConfig("gspo", beta=0.0, epsilon_low=3e-4, epsilon_high=4e-4),
}


@pytest.mark.parametrize("case", list(TRL_TO_OURS))
def test_trl_golden_parity(case):
    golden = json.loads(GOLDEN.read_text())
    g, x = (
        golden["cases"][case],
        {k: np.asarray(v, np.float32) for k, v in golden["inputs"].items()},
    )
    c = TRL_TO_OURS[case]
    old = None if g["old"] is None else x[g["old"]]
    ref = x["ref"] if c.beta > 0 else None
    mask, max_len = x["mask"], golden["setup"]["max_completion_length"]
    w = token_weights(mask, c, max_len=max_len)
    loss, grad, _ = jax_loss_and_grad(x["logp"], old, ref, x["adv"], mask, c, w)
    np.testing.assert_allclose(loss, g["loss"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, np.asarray(g["grad_logp"]), rtol=1e-5, atol=1e-7)

    gas = golden["setup"]["gradient_accumulation_steps"]
    for k, s in enumerate(np.split(np.arange(len(mask)), gas)):
        o = None if old is None else old[s]
        r = None if ref is None else ref[s]
        lk, _, m = jax_loss_and_grad(x["logp"][s], o, r, x["adv"][s], mask[s], c, np.asarray(w)[s])
        np.testing.assert_allclose(lk, g["micro_losses"][k], rtol=1e-6, atol=1e-6)
        # TRL's logged metrics are per-micro-batch means; compare counts (TRL's sequence-level
        # denominator counts every sequence, ours only non-empty ones).
        trl_m = g["micro_metrics"][k]
        den = len(s) if c.loss_type == "gspo" else mask[s].sum()
        for ours, theirs in [
            ("clip_frac_low", "clip_ratio/low_mean"),
            ("clip_frac_high", "clip_ratio/high_mean"),
            ("clip_frac", "clip_ratio/region_mean"),
        ]:
            np.testing.assert_allclose(m[ours][0], trl_m[theirs] * den, atol=1e-5, err_msg=ours)
        if "kl" in trl_m:
            np.testing.assert_allclose(finalize_metrics(m)["kl"], trl_m["kl"], rtol=1e-5)
