"""SFT: packing and the (micro-batched, sharded) train step are exact, the loss is the
completion-token NLL, and bad rows are named."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hf_utils import micro_config

from r1jax import sharding as shd
from r1jax import update
from r1jax.data import packing, sources
from r1jax.models import init_params, logits
from r1jax.models import transformer as tfm
from r1jax.stages import sft

CFG = micro_config(d_ff=64, vocab_size=53, init_std=0.2)


def _examples(seed=0, n=7):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(1, 53, rng.integers(1, 6)).tolist(),
            rng.integers(1, 53, rng.integers(1, 7)).tolist(),
        )
        for _ in range(n)
    ]


def _loss(params, rows):
    """The training loss (sft_loss) of one batch, normalised by count_targets as the step does."""
    batch, ctx = packing.count_targets({k: jnp.asarray(v) for k, v in rows.items()})
    return sft.sft_loss(params, batch, ctx, cfg=CFG, vocab_chunk=16)[0]


def _one_step(params, rows, mesh_axes, micro):
    """(params after one SGD(lr=1) step of the SFT train step, its metrics)."""
    mesh = shd.make_mesh(mesh_axes)
    params = jax.device_put(params, tfm.param_shardings(CFG, mesh))
    optimizer = optax.sgd(1.0)  # new params = params - gradient: the gradient itself is checked
    state = update.init_state(params, optimizer, mesh)
    batch, sh = update.put_batch(mesh, rows, micro)
    step = update.make_train_step(
        functools.partial(sft.sft_loss, cfg=CFG, vocab_chunk=16),
        optimizer,
        state_shardings=update.shardings_of(state),
        batch_shardings=sh,
        prepare=packing.count_targets,
    )
    state, m = step(state, batch)
    return jax.device_get(state["params"]), jax.device_get(m)


def test_packing_and_the_train_step_are_exact():
    """Packed rows give the loss and gradient of the examples alone; the jitted train step
    (micro-batched, sharded) applies exactly that whole-batch gradient."""
    params = jax.device_get(init_params(CFG, jax.random.key(0)))
    ex = _examples()
    packed = packing.pack(ex, 24)
    alone = packing.pack(ex, 24, packing=False)
    assert len(packed["tokens"]) < len(alone["tokens"]) == len(ex)
    assert packed["segment_ids"].max() > 1  # several examples share a row
    lp, gp = jax.value_and_grad(_loss)(params, packed)
    la, ga = jax.value_and_grad(_loss)(params, alone)
    assert lp == pytest.approx(float(la), rel=1e-6)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(ga)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())

    rows = packing.pad_rows(alone, 8)  # + one all-padding row, which trains nothing
    want = jax.tree.map(lambda p, g: p - g, params, ga)
    # Two micro-batches of 4 rows, each split over a 2 x 2 mesh, against the one-device,
    # whole-batch reference: accumulation and sharding are both exact.
    got, m = _one_step(params, rows, (("data", 2), ("fsdp", 2)), micro=4)
    assert float(m["loss"]) == pytest.approx(float(la), rel=1e-5)
    assert float(m["tokens"]) == sum(len(c) for _, c in ex)
    assert float(m["grad_norm"]) == pytest.approx(float(optax.global_norm(ga)), rel=1e-5)
    assert float(m["skipped"]) == 0.0
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * max(np.abs(b).max(), 1.0))


def test_loss_is_completion_nll_by_hand():
    params = init_params(CFG, jax.random.key(1))
    ex = _examples(1, n=3)
    nll, count = 0.0, 0
    for p, c in ex:  # reference: each example alone, plain log-softmax of full logits
        toks = np.asarray([p + c])
        z = np.asarray(logits(params, toks, np.ones_like(toks), CFG), np.float64)[0]
        logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        for t in range(len(p), len(p) + len(c)):
            nll -= z[t - 1, toks[0, t]] - logz[t - 1]
            count += 1
    rows = packing.pack(ex, 40)
    assert float(_loss(params, rows)) == pytest.approx(nll / count, rel=1e-5)


def test_pack_targets_and_positions():
    rows = packing.pack([([5, 6], [7, 8, 9]), ([1], [2])], 8, loss_on_prompt=False)
    np.testing.assert_array_equal(rows["tokens"][0], [5, 6, 7, 8, 9, 1, 2, 0])
    np.testing.assert_array_equal(rows["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 0])
    np.testing.assert_array_equal(rows["positions"][0], [0, 1, 2, 3, 4, 0, 1, 0])
    np.testing.assert_array_equal(rows["target"][0], [0, 0, 1, 1, 1, 0, 1, 0])
    pre = packing.pack([([5, 6], [7])], 4, loss_on_prompt=True)
    np.testing.assert_array_equal(pre["target"][0], [0, 1, 1, 0])


def test_bad_examples_are_named(tmp_path):
    with pytest.raises(ValueError, match="example 1: empty completion"):
        packing.pack([([1], [2]), ([3], [])], 8)
    with pytest.raises(ValueError, match="example 0: 9 tokens, more than the row length 8"):
        packing.pack([([1] * 4, [2] * 5)], 8)
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "  "}\n')
    with pytest.raises(sources.DataError, match=r"d.jsonl, line 2: .*completion"):
        sources.read_file(path, schema="sft")
