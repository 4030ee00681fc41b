"""The one update builder (r1jax/update.py), with GRPO's loss: sharded equals single-device,
micro-batching equals one batch, the non-finite guard, non-gradient state after the optimizer
step, and the process-local batch layout."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from hf_utils import micro_config

from r1jax import sharding as shd
from r1jax import update
from r1jax.models import init_params
from r1jax.optim import make_optimizer
from r1jax.rl import losses, objective

CFG = micro_config(d_ff=64)
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
    params = init_params(CFG, jax.random.key(0), mesh)
    state = update.init_state(params, optimizer, mesh)
    batch, bs = update.put_batch(mesh, _rows(), micro)
    step = update.make_train_step(
        _grpo_loss(loss_type),
        optimizer,
        state_shardings=update.shardings_of(state),
        batch_shardings=bs,
        prepare=functools.partial(objective.token_weights, loss_type=loss_type, max_len=T),
    )
    for _ in range(steps):
        state, metrics = step(state, batch)
    return jax.device_get(state["params"]), jax.device_get(metrics)


def _grpo_loss(loss_type):
    return functools.partial(
        objective.grpo_loss,
        cfg=CFG,
        loss_cfg=losses.LossConfig(loss_type=loss_type, beta=0.04),
        policy_loss=losses.policy_loss,
        prompt_len=P,
        temperature=1.0,
        vocab_chunk=16,
    )


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


def test_the_builder_equals_the_losses_formula_by_hand():
    """One update on one device equals optax applied to jax.grad of the loss written out by hand
    (policy_loss over the whole batch with token_weights), so nothing in the builder (scan,
    accumulation, prepare) changes the objective."""
    mesh = shd.make_mesh((("fsdp", 1),))
    rows = _rows()
    params = init_params(CFG, jax.random.key(0), mesh)

    def by_hand(p):
        b = {k: jnp.asarray(v) for k, v in rows.items()}
        w = losses.token_weights(b["mask"], "grpo", max_len=T)
        return objective.grpo_loss(p, {**b, "weight": w}, {}, **_grpo_loss("grpo").keywords)[0]

    g = jax.grad(by_hand)(params)
    want = jax.tree.map(lambda p, g: np.asarray(p) - np.asarray(g), params, g)  # SGD(1.0)
    got, metrics = _update(mesh, micro=4)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-7)
    assert metrics["loss"] == pytest.approx(float(by_hand(params)), rel=1e-5, abs=1e-7)


def _toy(mesh, micro=4, **kw):
    """A linear least-squares 'model' through the builder: loss = sum((x.w - y)^2) / rows."""
    rng = np.random.default_rng(1)
    rows = {"x": rng.normal(size=(16, 3)).astype(np.float32)}
    rows["y"] = (rows["x"] @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)

    def loss_fn(params, mb, ctx):
        r = mb["x"] @ params["w"] - mb["y"]
        return (r**2).sum() / ctx["rows"], {"abs_err": (jnp.abs(r).sum(), jnp.float32(r.size))}

    def prepare(batch):
        return batch, {"rows": jnp.float32(batch["y"].size)}

    params = {"w": jax.device_put(jnp.zeros(3), shd.replicated(mesh))}
    extra = kw.pop("extra", None)
    state = update.init_state(params, optax.sgd(0.1), mesh, extra=extra)
    batch, bs = update.put_batch(mesh, rows, micro)
    step = update.make_train_step(
        kw.pop("loss_fn", loss_fn),
        optax.sgd(0.1),
        state_shardings=update.shardings_of(state),
        batch_shardings=bs,
        prepare=prepare,
        **kw,
    )
    return step, state, batch, rows


def test_non_gradient_state_is_updated_after_the_optimizer_step():
    """after_update sees the new parameters and the step's metrics (e.g. an MoE router's
    balancing bias moved against the measured load); the optimizer never touches `extra`."""
    mesh = shd.make_mesh((("fsdp", 4),))

    def after(state, metrics):
        extra = {"err_sum": state["extra"]["err_sum"] + metrics["abs_err"]}
        return {**state, "extra": extra}

    step, state, batch, rows = _toy(mesh, extra={"err_sum": jnp.zeros(())}, after_update=after)
    errs = []
    for _ in range(3):
        errs.append(
            float(np.mean(np.abs(rows["x"] @ np.asarray(state["params"]["w"]) - rows["y"])))
        )
        state, m = step(state, batch)
        assert m["abs_err"] == pytest.approx(errs[-1], rel=1e-5)
    assert float(state["extra"]["err_sum"]) == pytest.approx(sum(errs), rel=1e-5)
    assert int(state["step"]) == 3


def test_a_non_finite_loss_skips_the_update_and_is_reported():
    mesh = shd.make_mesh((("fsdp", 1),))

    def nan_loss(params, mb, ctx):
        return (mb["x"] @ params["w"]).sum() * jnp.nan, {}

    step, state, batch, _ = _toy(mesh, loss_fn=nan_loss)
    before = jax.device_get(state)
    state, m = step(state, batch)
    assert m["skipped"] == 1.0 and not np.isfinite(m["loss"])
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, b)


def test_process_local_rows_round_trip_in_device_major_layout():
    """put_batch -> unsplit gives this process's rows back; each device holds one contiguous
    block of rows, split into micro-batches in order (the layout that makes a 2-process batch
    the same array as a 1-process batch)."""
    mesh = shd.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
    rows = {"r": np.arange(32, dtype=np.int32)[:, None] * np.ones((1, 3), np.int32)}
    batch, _ = update.put_batch(mesh, rows, micro=8)
    assert batch["r"].shape == (4, 8, 3)  # 4 micro-batches of 8 rows over 4 batch shards
    for shard in batch["r"].addressable_shards:
        block = np.asarray(shard.data)[:, :, 0]  # [n_micro, rows of this device per micro]
        d = shard.index[1].start // 2  # the device's batch shard
        np.testing.assert_array_equal(block.ravel(), np.arange(8 * d, 8 * d + 8))
    np.testing.assert_array_equal(update.unsplit(batch["r"]), rows["r"])


def test_scorer_sums_and_ratios():
    mesh = shd.make_mesh((("fsdp", 2),))
    rows = {"v": np.arange(8, dtype=np.float32), "mask": np.ones(8, np.float32)}
    batch, bs = update.put_batch(mesh, rows, micro=4)
    scorer = update.make_scorer(
        lambda p, mb: {
            "mean": (mb["v"].sum() * p, mb["mask"].sum()),
            "v_max": (mb["v"].max(), 1.0),
        },
        param_shardings=shd.replicated(mesh),
        batch_shardings=bs,
        rows=False,
    )
    r = update.ratios(scorer(jnp.float32(2.0), batch))
    assert r == {"mean": pytest.approx(2 * 28 / 8), "v_max": 7.0}
