"""The attention paths against the dense reference (forward and gradients, fp32), the model's
path choice, the planner's linear-memory terms against XLA, and the context-length check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_utils import left_padded_batch

from r1jax import plan as pl
from r1jax.configs import r1zero
from r1jax.errors import ConfigError
from r1jax.models import attention as A
from r1jax.models import get_preset, init_params, logits
from r1jax.models.config import ModelConfig, check_context
from r1jax.models.store import config_of
from r1jax.sharding import batch_sharding, make_mesh


def _inputs(n, T, H, K, dq, dv, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (
        jnp.asarray(rng.normal(size=(n, T, h, d)), jnp.float32)
        for h, d in ((H, dq), (K, dq), (K, dv))
    )
    return q, k, v, rng


def _packed_segments(n, T):
    """Row 0 left-padded (a prompt), row 1 two packed segments then right padding."""
    seg = np.ones((n, T), np.int32)
    seg[0, :5] = 0
    seg[1, 10:21] = 2
    seg[1, 30:] = 0
    return jnp.asarray(seg)


@pytest.mark.parametrize(
    "segments,causal,H,K,T,bq,bk",
    [
        ("packed", True, 4, 2, 37, 8, 16),  # GQA r=2; T a multiple of neither block
        ("none", False, 3, 1, 29, 16, 8),  # MQA r=3, no segment ids, no causal mask
    ],
)
def test_blocked_equals_dense_forward_and_gradients(segments, causal, H, K, T, bq, bk):
    n, dq, dv = 2, 8, 6  # value head size != query/key head size (MLA)
    q, k, v, rng = _inputs(n, T, H, K, dq, dv)
    seg = _packed_segments(n, T) if segments == "packed" else jnp.ones((n, T), jnp.int32)
    mask = A.dense_mask(seg, seg)
    if not causal:
        mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
    # Every row counts, padding queries (which see no key: a uniform softmax) included.
    w = jnp.asarray(rng.normal(size=(n, T, H, dv)), jnp.float32)
    dense = lambda q, k, v: A.dense(q, k, v, mask)  # noqa: E731
    blocked = lambda q, k, v: A.blocked(q, k, v, seg, seg, causal=causal, bq=bq, bk=bk)  # noqa: E731

    def out_and_grads(attn):
        loss = lambda *a: (jnp.sum(attn(*a) * w), attn(*a))  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (gd, od), (gb, ob) = out_and_grads(dense), out_and_grads(blocked)
    np.testing.assert_allclose(np.asarray(ob), np.asarray(od), atol=1e-5, rtol=0)
    for name, a, b in zip("qkv", gd, gb):
        assert float(jnp.abs(a).max()) > 0.1, name  # the gradient is not trivially zero
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize(
    "H,K,off,T,S,bq,bk",
    [
        (4, 2, 26, 11, 37, 8, 16),  # GQA r=2, the last chunk of a prompt; ragged blocks
        (3, 1, 5, 9, 29, 4, 8),  # MQA r=3, an inner chunk: the key blocks after it are skipped
    ],
)
def test_queries_at_an_offset_blocked_equals_dense(H, K, off, T, S, bq, bk):
    """T queries at key positions off + [0, T) (a prompt chunk against its cache): blocked and
    the cuDNN wiring (XLA implementation) against dense, forward and gradients, with a traced
    offset; the keys after the chunk get no gradient."""
    n, dq, dv = 2, 8, 6  # value head size != query/key head size (MLA)
    _, k, v, rng = _inputs(n, S, H, K, dq, dv)
    q = jnp.asarray(rng.normal(size=(n, T, H, dq)), jnp.float32)
    seg_k = _packed_segments(n, S)  # left padding, two packed segments, right padding
    seg_q = seg_k[:, off : off + T]
    w = jnp.asarray(rng.normal(size=(n, T, H, dv)), jnp.float32)

    def dense(q, k, v, o):
        return A.dense(q, k, v, A.dense_mask(seg_q, seg_k, o))

    def blocked(q, k, v, o):
        return A.blocked(q, k, v, seg_q, seg_k, bq=bq, bk=bk, q_offset=o)

    def out_and_grads(attn):
        loss = lambda q, k, v, o: (jnp.sum(attn(q, k, v, o) * w), attn(q, k, v, o))  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v, jnp.int32(off))

    (gd, od), (gb, ob) = out_and_grads(dense), out_and_grads(blocked)
    assert np.abs(np.asarray(od)).max() > 0.5
    np.testing.assert_allclose(np.asarray(ob), np.asarray(od), atol=1e-5, rtol=0)
    for name, a, b in zip("qkv", gd, gb):
        assert float(jnp.abs(a).max()) > 0.1, name
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0, err_msg=name)
    assert float(jnp.abs(gb[1][:, off + T :]).max(initial=0.0)) == 0.0  # no key after the chunk
    # JAX's fused attention takes equal q/v head sizes only: k serves as the values.
    xla = A.cudnn(q, k, k, seg_q, seg_k, implementation="xla", q_offset=off)
    ref = A.dense(q, k, k, A.dense_mask(seg_q, seg_k, off))
    np.testing.assert_allclose(np.asarray(xla), np.asarray(ref), atol=1e-5, rtol=0)


def test_model_logits_blocked_equal_dense():
    """Left-padded rows through a tiny Qwen2-layout model (dense equals transformers in
    tests/test_model.py). auto picks dense here: 24 keys fit one 512-key block."""
    cfg = get_preset("tiny", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16)
    cfg = cfg.replace(d_ff=96, vocab_size=128, init_std=0.2)
    params = init_params(cfg, jax.random.key(0))
    tokens, mask = left_padded_batch(np.random.default_rng(0), cfg.vocab_size, [9, 24, 3, 17], 24)
    tokens, mask_j = jnp.asarray(tokens), jnp.asarray(mask)
    run = jax.jit(logits, static_argnums=3)
    dense = np.asarray(run(params, tokens, mask_j, cfg))
    small_blocks = dict(attention="blocked", attention_block_q=8, attention_block_kv=16)
    blocked = np.asarray(run(params, tokens, mask_j, cfg.replace(**small_blocks)))
    assert np.abs(dense).max() > 1.0
    np.testing.assert_allclose(blocked, dense, atol=1e-5, rtol=0)  # padding positions too


def test_fused_kernel_wiring_equals_dense():
    """The cuDNN call's layout and mask, run through jax.nn.dot_product_attention's XLA
    implementation (no GPU here), and splash in Pallas' interpreter (no TPU here)."""
    n, T, H, K, d = 1, 128, 4, 2, 128
    q, k, v, _ = _inputs(n, T, H, K, d, d, seed=1)
    seg = np.ones((n, T), np.int32)
    seg[0, :5], seg[0, 70:] = 0, 2
    seg = jnp.asarray(seg)
    ref = np.asarray(A.dense(q, k, v, A.dense_mask(seg, seg)))
    xla = A.cudnn(q, k, v, seg, seg, implementation="xla")
    np.testing.assert_allclose(np.asarray(xla), ref, atol=1e-5, rtol=0)
    spl = A.splash(q, k, v, seg, bq=128, bk=128, interpret=True)
    np.testing.assert_allclose(np.asarray(spl), ref, atol=1e-5, rtol=0)


def _shard_maps(jaxpr):
    """in_specs of every shard_map in a jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "shard_map":
            found.append(eqn.params["in_specs"])
        for sub in jax.core.jaxprs_in_params(eqn.params):
            found += _shard_maps(sub)
    return found


def test_splash_on_a_sharded_mesh_equals_dense():
    """Splash (Pallas' interpreter) through the model's forward under a data 2 x fsdp 2 x
    tensor 2 mesh set in the trace: packed and padded rows, GQA with its kv heads split over
    "tensor"; hidden states and parameter gradients equal the dense path without a mesh, and
    the kernel ran in shard_map on local [1, T, 2|1 heads] blocks. Then MQA (1 kv head does
    not split over tensor: heads replicated) through splash_sharded alone. Splash's smallest
    legal block is 128 keys, so T = 128. Measured 8.8 s alone on the 2-core VM, 16 s at load
    4.7 (two grad compiles and the interpreted kernel's backward)."""
    from r1jax.models import transformer as tfm

    cfg = get_preset("tiny", d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=16)
    cfg = cfg.replace(d_ff=96, vocab_size=128, init_std=0.2)
    cfg = cfg.replace(attention_block_q=128, attention_block_kv=128)
    mesh = make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
    params = init_params(cfg, jax.random.key(0), mesh)
    N, T = 4, 128
    rng = np.random.default_rng(0)
    seg = np.ones((N, T), np.int32)
    seg[0, :5], seg[1, 40:90], seg[1, 110:], seg[3, 64:] = 0, 2, 0, 2  # left pad, packed
    seg = jnp.asarray(seg)
    rows = batch_sharding(mesh, 2, N)
    tokens = jax.device_put(jnp.asarray(rng.integers(0, cfg.vocab_size, (N, T))), rows)
    seg, pos = jax.device_put(seg, rows), jax.device_put(tfm.positions_from_mask(seg), rows)
    w = jnp.asarray(rng.normal(size=(N, T, cfg.d_model)), jnp.float32)

    def loss(params, c):
        h = tfm.forward(params, tokens, pos, seg, c)
        return jnp.sum(h * w), h

    run = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    g_dense, h_dense = run(params, cfg.replace(attention="dense"))
    splash = cfg.replace(attention="splash")
    with jax.set_mesh(mesh):
        g_splash, h_splash = run(params, splash)
        specs = _shard_maps(jax.make_jaxpr(loss, static_argnums=1)(params, splash).jaxpr)
    P = jax.sharding.PartitionSpec
    qkv = P(("data", "fsdp"), None, "tensor", None)
    assert len(specs) == 1  # one layer; before q, k, v, seg: the kernel's constants, replicated
    assert specs[0][-4:] == (qkv, qkv, qkv, P(("data", "fsdp"), None))
    assert np.abs(np.asarray(h_dense)).max() > 1.0
    np.testing.assert_allclose(np.asarray(h_splash), np.asarray(h_dense), atol=1e-5, rtol=0)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(g_dense), jax.tree.leaves(g_splash)
    ):
        scale = float(jnp.abs(a).max())  # sums over 512 positions: up to ~100 here
        assert scale > 1.0, path
        np.testing.assert_allclose(b, a, atol=1e-5 * scale, rtol=0, err_msg=str(path))

    q, k, v, _ = _inputs(N, T, 3, 1, 16, 8, seed=2)
    ref = A.dense(q, k, v, A.dense_mask(seg, seg))
    kw = dict(bq=128, bk=128, interpret=True)
    with jax.set_mesh(mesh):
        out = jax.jit(lambda *a: A.splash_sharded(*a, **kw))(q, k, v, seg)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)


def test_auto_choice():
    c = lambda S, platform, dtype="bfloat16", dq=128, dv=128, devices=1: A.choose(  # noqa: E731
        "auto", S, 512, dq, dv, dtype, platform, devices
    )
    assert c(512, "tpu") == c(144, "cpu") == "dense"  # one key block: decode-sized, embedded run
    assert c(513, "tpu") == "splash" and c(4096, "cpu") == "blocked"
    assert c(4096, "tpu", devices=8) == "blocked"  # splash is not partitioned without shard_map
    with jax.set_mesh(make_mesh((("fsdp", 8),))):
        assert c(4096, "tpu", devices=8) == "splash"  # ... which a mesh set in the trace gives
    assert c(4096, "gpu") == "cudnn"
    assert c(4096, "gpu", dtype="float32") == c(4096, "gpu", dv=64) == "blocked"
    assert A.choose("blocked", 16, 512, 8, 8, "float32", "cpu") == "blocked"  # explicit wins
    with pytest.raises(ValueError, match="ModelConfig.attention='flash'"):
        get_preset("tiny", attention="flash")


def _grad_temp(cfg, n, S):
    """temp_size_in_bytes of grad(sum of log-probs) over one [n,S] micro-batch."""
    from r1jax.models import transformer as tfm

    def loss(params, tokens):
        seg = jnp.ones_like(tokens)
        h = tfm.forward(params, tokens, tfm.positions_from_mask(seg), seg, cfg)
        return -tfm.token_logprobs(params, h[:, :-1], tokens[:, 1:], cfg)[0].sum()

    tok = jax.ShapeDtypeStruct((n, S), jnp.int32)
    fn = jax.jit(jax.grad(loss)).lower(tfm.abstract_params(cfg), tok).compile()
    return fn.memory_analysis().temp_size_in_bytes


def test_blocked_training_memory_is_linear_and_planned():
    """XLA's temporary memory of a training step doubles with S on the blocked path (dense:
    the [S,S] terms), and the planner's estimate of it is within 1.25x."""
    cfg = ModelConfig(64, 32, 2, 4, 2, 8, 64, attention="blocked")
    cfg = cfg.replace(attention_block_q=64, attention_block_kv=64)
    t1, t2 = _grad_temp(cfg, 1, 1024), _grad_temp(cfg, 1, 2048)
    assert 1.8 < t2 / t1 < 2.2, (t1, t2)  # dense: ~4x (benchmarks/attention.py)
    s = pl.Settings(1, 1, 1, 2047, micro_batch=1)
    est = pl.activation_bytes(cfg, pl.abstract_mesh({}), s, remat=False)
    assert 1 / 1.25 < est / t2 < 1.25, (est, t2)


def test_context_length_is_checked_before_compile():
    math7 = get_preset("qwen2.5-math-7b")  # 4,096 positions
    with pytest.raises(ConfigError, match=r"max_prompt_len \(1024\) \+ .*max_new_tokens \(32768"):
        check_context(math7, 1024, 32_768)
    check_context(math7, 1024, 3072)  # exactly the context
    check_context(math7.replace(rope_llama3=(8.0, 1.0, 4.0, 4096)), 1024, 32_768)  # scaled RoPE

    # The paper path: 32,768 new tokens on Qwen2.5-7B (131,072 positions) plans; the same
    # settings on a Qwen2.5-Math base are refused by the planner (and so by the GRPO stage).
    c = r1zero.get_config("model=paper")
    assert (c.sampling.max_new_tokens, c.eval.sampling.max_new_tokens) == (32_768, 32_768)
    assert c.rl.epsilon_low == c.rl.epsilon_high == 0.2  # not stated for R1-Zero
    assert r1zero.get_config("model=paper,stage1").rl.epsilon_low == 10.0
    assert r1zero.get_config("model=/some/Qwen2.5-Math-1.5B").sampling.max_new_tokens == 1024
    s = pl.settings_of(c)
    p = pl.plan(config_of(c.model), {"fsdp": 8}, s, "h100x8")
    assert p.params > 0
    with pytest.raises(ConfigError, match="max_seq_len .* = 4096"):
        pl.plan(math7, {"fsdp": 8}, s, "h100x8")
