"""The jitted GRPO update: sharded equals single-device, micro-batching equals one batch."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from r1jax import runtime
from r1jax import sharding as shd
from r1jax.models import get_preset, init_params
from r1jax.optim import make_optimizer
from r1jax.rl import losses
from r1jax.rl.update import make_train_step

CFG = get_preset(
    "tiny",
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=8,
    d_ff=64,
    vocab_size=61,
    init_std=0.1,
)
P, T, N = 8, 6, 16


def _rows(seed=0):
    rng = np.random.default_rng(seed)
    p_len, c_len = rng.integers(1, P + 1, N), rng.integers(1, T + 1, N)
    attn = np.zeros((N, P + T), np.int32)
    mask = np.zeros((N, T), np.int32)
    for i in range(N):
        attn[i, P - p_len[i] : P + c_len[i]] = 1
        mask[i, : c_len[i]] = 1
    tokens = rng.integers(0, CFG.vocab_size, (N, P + T)).astype(np.int32) * attn
    logp = -rng.uniform(0.5, 4.0, (N, T)).astype(np.float32) * mask
    return {
        "tokens": tokens,
        "attn": attn,
        "mask": mask,
        "sampler_logp": logp,
        "old_logp": (logp + rng.normal(0, 0.3, (N, T))).astype(np.float32) * mask,
        "ref_logp": (logp + rng.normal(0, 0.3, (N, T))).astype(np.float32) * mask,
        "adv": rng.normal(0, 1, N).astype(np.float32),
    }


def _update(mesh, micro, loss_type="grpo", steps=1, adam=False):
    """Parameters after `steps` updates. SGD by default: its update is lr * gradient, so
    comparing updates compares gradients; Adam's first step is ~lr*sign(g), which amplifies
    rounding in near-zero gradients and would make a relative comparison meaningless."""
    ocfg = ml_collections.ConfigDict(
        dict(
            lr=1e-2,
            warmup_steps=0,
            schedule="constant",
            min_lr_ratio=0.0,
            weight_decay=0.1,
            b1=0.9,
            b2=0.99,
            eps=1e-8,
            grad_clip=1.0,
            total_steps=10,
        )
    )
    optimizer = make_optimizer(ocfg)[0] if adam else optax.sgd(1.0)
    loss_cfg = losses.LossConfig(loss_type=loss_type, beta=0.04)
    params = init_params(CFG, jax.random.key(0), mesh)
    state = runtime.init_state(params, optimizer, mesh)
    rows = _rows()
    rows["weight"] = np.asarray(losses.token_weights(rows["mask"], loss_type, max_len=T))
    host = runtime.micro_split(rows, micro)
    batch, bs = runtime.put_batch(mesh, host)
    step = make_train_step(
        CFG,
        loss_cfg,
        optimizer,
        prompt_len=P,
        temperature=1.0,
        vocab_chunk=16,
        state_shardings=runtime.shardings_of(state),
        batch_shardings=bs,
    )
    for _ in range(steps):
        state, metrics = step(state, batch)
    return jax.device_get(state["params"]), jax.device_get(metrics)


def _delta(params):
    init = jax.device_get(init_params(CFG, jax.random.key(0)))
    return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), params, init)


@pytest.fixture(scope="module")
def single():
    return _update(shd.make_mesh((("fsdp", 1),)), micro=16)


def test_update_on_8_devices_equals_single_device(single):
    mesh8 = shd.make_mesh((("fsdp", 4), ("tensor", 2)))
    p8, m8 = _update(mesh8, micro=8)
    p1, m1 = single
    for a, b in zip(jax.tree.leaves(_delta(p8)), jax.tree.leaves(_delta(p1))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    for k in ("loss", "grad_norm", "kl", "clip_frac", "entropy"):
        assert m8[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_four_micro_batches_equal_one_batch(loss_type, single):
    one = single if loss_type == "grpo" else _update(shd.make_mesh((("fsdp", 1),)), 16, loss_type)
    four = _update(shd.make_mesh((("fsdp", 1),)), micro=4, loss_type=loss_type)
    # Updates (= -gradients under SGD(1.0)) agree to 1e-5 relative, up to the fp32 rounding of
    # adding them to parameters of magnitude ~0.3 (2e-7 absolute).
    for a, b in zip(jax.tree.leaves(_delta(four[0])), jax.tree.leaves(_delta(one[0]))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-7)
    assert four[1]["loss"] == pytest.approx(one[1]["loss"], rel=1e-5, abs=1e-7)
    assert four[1]["grad_norm"] == pytest.approx(one[1]["grad_norm"], rel=1e-5)
    assert one[1]["grad_norm"] > 0 and one[1]["skipped"] == 0.0


def test_adamw_update_runs_sharded_and_matches(single):
    """The real optimizer (AdamW, clipping, weight decay) sharded vs single-device, 3 steps."""
    mesh8 = shd.make_mesh((("fsdp", 8),))
    p8, _ = _update(mesh8, micro=8, steps=3, adam=True)
    p1, _ = _update(shd.make_mesh((("fsdp", 1),)), micro=16, steps=3, adam=True)
    for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)  # lr 1e-2: ~0.1% of a step
