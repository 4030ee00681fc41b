"""The memory planner against hand counts, real sharded arrays and XLA's memory_analysis()."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import plan as pl
from r1jax import sharding as shd
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig, get_preset

GiB = 1024**3
# Odd sizes so that rules fall back: V=250 and K=2 do not split 4 ways, D=36 not 8 ways (so on
# fsdp=8 everything is replicated).
ODD = ModelConfig(250, 36, 2, 4, 2, 8, 60, qkv_bias=True)
SMALL = ModelConfig(512, 64, 2, 4, 2, 16, 128, qkv_bias=True)


def hand_count(L, D, H, K, Dh, F, V, tied, bias=True):
    layer = D * H * Dh + 2 * D * K * Dh + H * Dh * D + 3 * D * F + 2 * D + bias * (H + 2 * K) * Dh
    return V * D * (1 if tied else 2) + D + L * layer


def test_parameter_bytes_of_presets_match_hand_counts_and_published_sizes():
    q7, q32 = get_preset("qwen2.5-7b"), get_preset("qwen2.5-32b")
    n7 = hand_count(28, 3584, 28, 4, 128, 18944, 152_064, tied=False)
    n32 = hand_count(64, 5120, 40, 8, 128, 27648, 152_064, tied=False)
    assert n7 == tfm.count_params(q7) == 7_615_616_512  # Qwen2.5-7B: 7.61B on the Hub
    assert n32 == tfm.count_params(q32) == 32_763_876_352  # Qwen2.5-32B: 32.8B on the Hub
    one = pl.abstract_mesh({})
    assert pl.param_bytes(q7, one) == 4 * n7  # float32 by default
    assert pl.param_bytes(q32.replace(param_dtype="bfloat16"), one) == 2 * n32
    # AdamW: mu and nu like the params, plus an int32 step count.
    assert pl.opt_state_bytes(q7, one) == 8 * n7 + 4


def _per_device_bytes(tree) -> int:
    sizes = {}
    for leaf in jax.tree.leaves(tree):
        for s in leaf.addressable_shards:
            sizes[s.device] = sizes.get(s.device, 0) + s.data.nbytes
    assert len(set(sizes.values())) == 1, sizes  # the same on every device
    return next(iter(sizes.values()))


@pytest.mark.parametrize(
    "shape", [{"fsdp": 2, "tensor": 4}, {"data": 2, "fsdp": 2, "tensor": 2}, {"fsdp": 8}]
)
def test_sharded_param_and_opt_bytes_equal_real_shards(shape):
    mesh = shd.make_mesh(tuple(shape.items()))
    params = tfm.init_params(ODD, jax.random.key(0), mesh)
    opt_state = jax.jit(optax.adamw(1e-3).init)(params)
    am = pl.abstract_mesh(shape)
    assert pl.param_bytes(ODD, am) == _per_device_bytes(params)
    assert pl.opt_state_bytes(ODD, am) == _per_device_bytes(opt_state)


def _train_like_memory(cfg, shape, n, P, T):
    """memory_analysis() of grad(-sum token log-probs) of one micro-batch on `shape`."""
    mesh = shd.make_mesh(tuple(shape.items()))

    def loss(params, tokens, attn):
        h = tfm.forward(params, tokens, tfm.positions_from_mask(attn), attn, cfg)
        logp, ent = tfm.token_logprobs(params, h[:, P - 1 : -1], tokens[:, P:], cfg, **KW)
        return -logp.sum() + 0.0 * ent.sum()

    ps = tfm.param_shardings(cfg, mesh)
    bs = shd.named_sharding(("batch", None), (n, P + T), mesh)
    fn = jax.jit(jax.grad(loss), in_shardings=(ps, bs, bs), out_shardings=ps)
    tok = jax.ShapeDtypeStruct((n, P + T), jnp.int32)
    return fn.lower(tfm.abstract_params(cfg), tok, tok).compile().memory_analysis()


KW = dict(vocab_chunk=8192, with_entropy=True)


@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("shape,n,P,T", [({}, 4, 32, 96), ({"data": 8}, 16, 64, 192)])
def test_estimates_against_compiled_memory_analysis(remat, shape, n, P, T):
    cfg = SMALL.replace(remat=remat)
    m = _train_like_memory(cfg, shape or {"fsdp": 1}, n, P, T)
    s = pl.Settings(1, 1, P, T, micro_batch=n)
    am = pl.abstract_mesh(shape)
    rows = n // am.size
    # Arguments: the parameter shards and two int32 [rows, S] arrays, exactly.
    assert m.argument_size_in_bytes == pl.param_bytes(cfg, am) + 2 * rows * (P + T) * 4
    # Output: the gradient, like the params (plus a few bytes of tuple).
    assert m.output_size_in_bytes == pytest.approx(pl.param_bytes(cfg, am), rel=0.01)
    # Activations are an estimate. Measured ratios estimate/temp: 0.90 and 1.18 (one device,
    # without / with remat), 0.95 and 0.98 (data=8); held to 1.3x either way.
    ratio = pl.activation_bytes(cfg, am, s, remat) / m.temp_size_in_bytes
    assert 1 / 1.3 < ratio < 1.3, (ratio, m.temp_size_in_bytes)


def test_argument_size_matches_fsdp_sharded_params():
    m = _train_like_memory(SMALL, {"fsdp": 4, "tensor": 2}, 8, 16, 48)
    am = pl.abstract_mesh({"fsdp": 4, "tensor": 2})
    assert m.argument_size_in_bytes == pl.param_bytes(SMALL, am) + 2 * 2 * 64 * 4


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_kv_cache_matches_prefill_and_init_suffix():
    B, G, P, T, chunk = 4, 3, 16, 40, 16
    s = pl.Settings(B, G, P, T, micro_batch=1, decode_chunk=chunk)
    params = tfm.abstract_params(ODD)
    tok = jax.ShapeDtypeStruct((B, P), jnp.int32)
    _, prefix = jax.eval_shape(lambda p, t: tfm.prefill(p, t, t, ODD), params, tok)
    suffix = jax.eval_shape(lambda: tfm.init_suffix(ODD, B * G, 48))  # 40 -> 3 chunks of 16
    assert pl.kv_cache_bytes(ODD, pl.abstract_mesh({}), s) == _nbytes(prefix) + _nbytes(suffix)

    # On data=2, fsdp=2, tensor=2 the prompts split 4 ways and the 2 kv heads 2 ways; the
    # prefix shards are those of a real sharded prefill.
    mesh = shd.make_mesh((("data", 2), ("fsdp", 2), ("tensor", 2)))
    real = tfm.init_params(ODD, jax.random.key(0), mesh)
    tokens = jax.device_put(np.ones((B, P), np.int32), shd.batch_sharding(mesh, 2, B))
    _, pre = jax.jit(tfm.prefill, static_argnums=3)(real, tokens, tokens, ODD)
    local_prefix = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(pre))
    kv_suffix = (_nbytes(suffix) - 4) // 8 + 4  # k and v split 8 ways; the int32 index not
    am = pl.abstract_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert pl.kv_cache_bytes(ODD, am, s) == local_prefix + kv_suffix


def test_target_parsing():
    t = pl.target("v5p-128")
    assert (t.kind, t.num_devices, t.memory_bytes, t.per_host) == ("TPU v5p", 64, 95 * GiB, 4)
    assert (pl.target("v5e-256").num_devices, pl.target("v5e-256").memory_bytes) == (256, 16 * GiB)
    assert (pl.target("v6e-8").per_host, pl.target("v6e-8").memory_bytes) == (8, 32 * GiB)
    assert pl.target("v6e-64").per_host == 4
    assert (pl.target("h100x64").num_devices, pl.target("h100x64").memory_bytes) == (64, 80 * GiB)
    assert pl.target("h200x8").memory_bytes == 141 * 10**9
    assert pl.target("cpu").num_devices == 1 and pl.target("cpu").memory_bytes > 0
    for bad in ("v5p-7", "tpu-8", "h100x0", "h100x12", "v4-8"):
        with pytest.raises(ValueError, match="target"):
            pl.target(bad)


def test_check_raises_only_for_params_and_optimizer_and_warns_on_total():
    s = pl.Settings(8, 4, 64, 192, micro_batch=8)
    cfg = get_preset("qwen2.5-7b")
    p = pl.plan(cfg, {"fsdp": 8}, s, "h100x8", label="7b")
    assert p.params == pytest.approx(4 * 7_615_616_512 / 8, rel=1e-3)
    assert pl.check(p) == []  # ~12 GiB of params+opt and small activations on 80 GiB
    with pytest.raises(ValueError, match=r"params 3\.5 GiB \+ opt_state 7\.1 GiB exceed") as e:
        pl.check(dataclasses.replace(p, target=dataclasses.replace(p.target, memory_bytes=GiB)))
    assert "\n" not in str(e.value)
    tight = dataclasses.replace(p.target, memory_bytes=p.params + p.opt_state + 1)
    warnings = pl.check(dataclasses.replace(p, target=tight, remat=False))
    assert len(warnings) == 2 and warnings[0].startswith("total ") and "remat" in warnings[1]


def test_paper_settings_recommend_meshes_with_hand_checked_components():
    s = pl.Settings()  # G=16, 32 prompts, 1024 + 31744 tokens, micro-batch 8, beta 0.001
    q7 = get_preset("qwen2.5-7b", dtype="bfloat16", remat=True)
    q32 = get_preset("qwen2.5-32b", dtype="bfloat16", remat=True)
    p7, why7 = pl.recommend(q7, "v5p-64", s, label="7b")
    # Naive attention keeps [rows, heads, S, S] scores: 32k tokens do not fit a v5p chip.
    assert p7.mesh == {"data": 1, "fsdp": 8, "tensor": 4} and not p7.fits
    assert why7.startswith("nothing fits") and "update" in why7
    # Parameters: every matrix splits 32 ways; q/k/v biases 4 ways over tensor; norms whole.
    norms, biases = 28 * 2 * 3584 + 3584, 28 * (28 + 8) * 128
    assert p7.params == 4 * ((7_615_616_512 - norms - biases) // 32 + biases // 4 + norms)
    # KV cache: 32 prompts over 8 -> 4 prompts, 64 rows; 4 kv heads over 4; bf16 k and v.
    per_pos = 2 * 28 * 1 * 128 * 2
    assert p7.kv_cache == 4 * 1024 * (per_pos + 1) + 4 * 4 + 64 * 31744 * per_pos + 4

    p32, _ = pl.recommend(q32, "h100x8", s, label="32b")
    assert p32.mesh == {"data": 1, "fsdp": 8, "tensor": 1} and not p32.fits
    norms, biases = 64 * 2 * 5120 + 5120, 64 * (40 + 16) * 128
    assert p32.params == 4 * ((32_763_876_352 - norms - biases) // 8 + norms + biases)
    assert p32.opt_state == 2 * p32.params + 4 and p32.grads == 2 * p32.params
    assert p32.ref_params == p32.params

    # At 8k tokens (1024 + 7168) both fit a v5p-64 slice.
    short = dataclasses.replace(s, max_new_tokens=7168)
    assert all(pl.recommend(c, "v5p-64", short)[0].fits for c in (q7, q32))
    table = pl.format_table([p7, p32])
    assert len(table.splitlines()) == 4 and "1/8/4" in table and "NO" in table
