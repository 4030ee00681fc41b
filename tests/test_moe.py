"""MoE and MLA: the dispatch against a per-token NumPy loop, HF parity (full forward and MLA
latent-cache decode) for Qwen3-MoE / DeepSeek-V2 / DeepSeek-V3, FP8 import, preset sizes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_utils import left_padded_batch, make_hf_model, torch_logits

from r1jax.models import hf as hf_io
from r1jax.models import logits, moe
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig, get_preset

KINDS = ("qwen3_moe", "deepseek_v2", "deepseek_v3")
# Jitted once per config: op-by-op dispatch of these small models costs more than compiling.
moe_ffn = jax.jit(moe.moe_ffn, static_argnums=2)
logits_jit = jax.jit(logits, static_argnums=3)
prefill = jax.jit(tfm.prefill, static_argnums=3)
decode_step = jax.jit(tfm.decode_step, static_argnums=5)


def _np_moe(x, lp, cfg, bias=None):
    """Per-token reference: route each token on its own (NumPy), run its k experts one by one."""
    out, probs = np.zeros_like(x), np.zeros((x.shape[0], cfg.n_experts))
    for t in range(x.shape[0]):
        logit = x[t] @ lp["router"]
        if cfg.router == "sigmoid":
            s = 1 / (1 + np.exp(-logit))
            choice = s + bias
            g = choice.reshape(cfg.n_group, -1)
            gscore = np.sort(g, axis=1)[:, -2:].sum(1)
        else:
            s = np.exp(logit - logit.max())
            s = s / s.sum()
            choice = s.copy()
            gscore = choice.reshape(cfg.n_group, -1).max(1)
        groups = np.argsort(-gscore)[: cfg.topk_group]
        per = cfg.n_experts // cfg.n_group
        eligible = np.concatenate([np.arange(g * per, (g + 1) * per) for g in groups])
        chosen = eligible[np.argsort(-choice[eligible])[: cfg.n_experts_per_tok]]
        probs[t] = s / s.sum()
        gates = s[chosen] / (s[chosen].sum() if cfg.norm_topk_prob else 1.0)
        for e, w in zip(chosen, gates * cfg.routed_scaling):
            h = x[t] @ lp["we_gate"][e]
            h = h / (1 + np.exp(-h)) * (x[t] @ lp["we_up"][e])
            out[t] += w * (h @ lp["we_down"][e])
    return out, probs


@pytest.mark.parametrize(
    "router,groups,dispatch", [("sigmoid", (4, 2), "ragged"), ("softmax", (4, 2), "blocked")]
)
def test_sorted_dispatch_equals_per_token_loop(router, groups, dispatch):
    """route + sorted dispatch = each token routed alone and its experts run one by one
    (V3: sigmoid, group top-2 sums, a non-zero bias that changes choices, normalised gates
    times the scale; V2: softmax, max per group). Load and dropped counts agree with it. The
    two grouped-matmul forms equal each other below."""
    cfg = ModelConfig(
        16, 16, 1, 2, 2, 8, 32, n_experts=8, n_experts_per_tok=2, moe_d_ff=12, router=router,
        n_group=groups[0], topk_group=groups[1], norm_topk_prob=router == "sigmoid",
        routed_scaling=2.5, expert_matmul=dispatch,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    lp = {
        "router": rng.normal(size=(16, 8)).astype(np.float32),
        "router_bias": rng.normal(scale=0.5, size=8).astype(np.float32),
        "we_gate": rng.normal(size=(8, 16, 12)).astype(np.float32) * 0.3,
        "we_up": rng.normal(size=(8, 16, 12)).astype(np.float32) * 0.3,
        "we_down": rng.normal(size=(8, 12, 16)).astype(np.float32) * 0.3,
    }
    x = rng.normal(size=(2, 10, 16)).astype(np.float32)
    y, routing = moe_ffn(jnp.asarray(x), jax.tree.map(jnp.asarray, lp), cfg)
    ref, probs = _np_moe(x.reshape(20, 16), lp, cfg, lp["router_bias"])
    np.testing.assert_allclose(np.asarray(y).reshape(20, 16), ref, atol=1e-4, rtol=1e-4)
    experts = np.asarray(routing["experts"])
    counts = np.bincount(experts.ravel(), minlength=8)
    np.testing.assert_array_equal(np.asarray(routing["load"]), counts)
    # Sequence-wise balance loss (DeepSeek-V3 eq. 17-20) per row: sum_e f_e P_e.
    for n in range(2):
        f = 8 / (2 * 10) * np.bincount(experts[n].ravel(), minlength=8)
        p = probs.reshape(2, 10, 8)[n].mean(0)
        np.testing.assert_allclose(routing["balance_loss_N"][n], (f * p).sum(), rtol=1e-5)
    assert float(routing["dropped"]) == 0.0  # dropless by default


def test_blocked_dispatch_equals_ragged_dot_with_gradients():
    """The blocked grouped matmuls (each expert's run padded to whole blocks of 16 rows, one
    batched matmul) give ragged_dot's output and gradients (tokens, gates, every expert weight)
    for uneven loads: an expert filling exactly 2 blocks, one with none, and assignments to an
    expert past the last (another device's, under expert parallelism) that count nowhere."""
    E, T, k, D, F = 4, 100, 2, 8, 12
    assert moe.block_size(T * k, E) == 16
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.repeat([0, 1, 2, E], [32, 45, 100, 21]))  # none for expert 3
    experts = jnp.asarray(np.append([E, E], ids).reshape(T, k), jnp.int32)  # token 0: foreign
    x = jnp.asarray(rng.normal(size=(T, D)), jnp.float32)
    gates = jnp.asarray(rng.uniform(size=(T, k)), jnp.float32)
    ws = [jnp.asarray(rng.normal(size=s) * 0.3, jnp.float32) for s in [(E, D, F), (E, D, F)]]
    ws.append(jnp.asarray(rng.normal(size=(E, F, D)) * 0.3, jnp.float32))
    r = jnp.asarray(rng.normal(size=(T, D)), jnp.float32)
    cfg = ModelConfig(16, D, 1, 2, 2, 4, F, n_experts=E, n_experts_per_tok=k, moe_d_ff=F)
    assert moe.matmul_form(cfg) == "blocked"  # auto, on CPU

    def run(dispatch):
        c = cfg.replace(expert_matmul=dispatch)
        f = lambda x, g, *w: moe._grouped_ffn(x, experts, g, *w, c)  # noqa: E731
        y = jax.jit(f)(x, gates, *ws)
        grads = jax.jit(jax.grad(lambda *a: (f(*a) * r).sum(), range(5)))(x, gates, *ws)
        return y, grads

    y_b, g_b = run("blocked")
    y_r, g_r = run("ragged")
    np.testing.assert_allclose(y_b, y_r, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_b, g_r, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(g_b[2][3]).max()) == 0.0  # the unused expert gets no gradient
    own = np.asarray(experts < E).any(-1)  # tokens with one of this device's experts
    assert np.all(np.asarray(y_b)[~own] == 0) and np.all(np.abs(np.asarray(y_b)[own]).max(-1) > 0)


def test_capacity_factor_drops_the_latest_assignments_of_an_overloaded_expert():
    """With capacity ceil(c*T*k/E), an expert keeps its first `capacity` tokens; a dropped
    assignment contributes nothing, and the count is reported."""
    cfg = ModelConfig(16, 8, 1, 2, 2, 4, 8, n_experts=4, n_experts_per_tok=1, moe_d_ff=4)
    lp = {  # every token prefers expert 0
        "router": jnp.zeros((8, 4)).at[:, 0].set(1.0),
        "we_gate": jnp.ones((4, 8, 4)),
        "we_up": jnp.ones((4, 8, 4)),
        "we_down": jnp.ones((4, 4, 8)),
    }
    x = jnp.ones((1, 8, 8))
    full, r_full = moe_ffn(x, lp, cfg)
    capped, r_cap = moe_ffn(x, lp, cfg.replace(capacity_factor=1.0))  # capacity 2
    assert moe.capacity(cfg.replace(capacity_factor=1.0), 8) == 2
    np.testing.assert_allclose(capped[0, :2], full[0, :2])
    np.testing.assert_array_equal(capped[0, 2:], 0.0)
    assert float(r_full["dropped"]) == 0 and float(r_cap["dropped"]) == 6


def test_balancing_bias_moves_against_the_load_and_gets_no_gradient():
    load = jnp.array([[5.0, 1.0, 2.0, 0.0]])
    new = moe.update_router_bias(jnp.zeros((1, 4)), load, 0.001)
    np.testing.assert_allclose(new, [[-0.001, 0.001, 0.0, 0.001]])
    cfg = ModelConfig(
        16, 8, 1, 2, 2, 4, 8, n_experts=4, n_experts_per_tok=2, moe_d_ff=4, router="sigmoid"
    )
    lp = {k: jnp.ones(s) * 0.1 for k, s in [("router", (8, 4)), ("router_bias", (4,))]}
    lp.update({k: jnp.ones(s) for k, s in [("we_gate", (4, 8, 4)), ("we_up", (4, 8, 4))]})
    lp["we_down"] = jnp.ones((4, 4, 8))
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 8))
    g = jax.jit(jax.grad(lambda p: moe_ffn(x, p, cfg)[0].sum()))(lp)
    assert float(jnp.abs(g["router_bias"]).max()) == 0.0 and float(jnp.abs(g["router"]).max()) > 0


@pytest.fixture(scope="module")
def hf_moe(tmp_path_factory):
    out = {}
    for kind in KINDS:
        path = str(tmp_path_factory.mktemp(kind))
        out[kind] = (path, make_hf_model(path, kind, init_std=0.2))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_hf_parity_generation_and_bit_identical_roundtrip(hf_moe, kind, tmp_path):
    """transformers 5.24 saves per-expert tensors (mlp.experts.{j}.gate_proj.weight ...), not
    its in-memory fused gate_up_proj: that is the layout pinned here. Logits within 1e-4 (left
    padding, dense first layers, shared experts, group-limited routing, V3's non-zero bias,
    YaRN), greedy decoding (prefill + cached decode) token for token equal to generate(), and
    import -> export -> import bit-identical. The MLA decode path (absorbed weights, latent
    cache) is the one checked for the DeepSeek kinds."""
    import torch

    path, model = hf_moe[kind]
    names = set(hf_io.read_index(path))
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in names
    assert not any("gate_up_proj" in n for n in names)
    cfg, params = hf_io.load_hf(path)
    # One device: no 8-way partitioned programs, and decode_step's outputs are placed like its
    # inputs, so the loop below compiles it once.
    params = jax.device_put(params, jax.devices()[0])
    tok, mask = left_padded_batch(np.random.default_rng(0), cfg.vocab_size, [7, 4], 7)
    ref = torch_logits(model, tok, mask)
    got = np.asarray(logits_jit(params, jnp.asarray(tok), jnp.asarray(mask), cfg))
    np.testing.assert_allclose(got[mask.astype(bool)], ref[mask.astype(bool)], atol=1e-4)

    # Greedy decoding: one prompt prefilled once, its cache shared by G=2 rows; each step's
    # logits equal transformers' full forward over the generated sequence.
    steps = 4
    with torch.no_grad():
        want = model.generate(
            input_ids=torch.tensor(tok[:1]), max_new_tokens=steps, do_sample=False
        )[0].numpy()
    ref = torch_logits(model, want[None, :-1], np.ones((1, 7 + steps - 1), np.int32))[0, 6:]
    h, prefix = prefill(params, jnp.asarray(tok[:1]), jnp.asarray(mask[:1]), cfg)
    suffix = jax.device_put(tfm.init_suffix(cfg, 2, steps), jax.devices()[0])
    if cfg.kv_lora_rank:  # MLA: kv_lora_rank + qk_rope_dim values per token and layer
        assert prefix["kv"].shape == (cfg.n_layers, 1, 7, 16 + 8)
        assert suffix["kv"].shape == (cfg.n_layers, 2, steps, 16 + 8) and "k" not in suffix
    h = jnp.repeat(h, 2, axis=0)
    for i in range(steps):
        step_logits = np.asarray(tfm.logits_from_hidden(params, h, cfg))
        np.testing.assert_allclose(step_logits, ref[i][None].repeat(2, 0), atol=1e-4)
        assert step_logits[0].argmax() == want[7 + i]
        tokens = jnp.asarray(step_logits.argmax(-1))
        h, suffix = decode_step(params, tokens, jnp.full((2,), 7 + i), prefix, suffix, cfg)

    hf_io.save_hf(params, cfg, str(tmp_path / "out"))
    cfg2, params2 = hf_io.load_hf(str(tmp_path / "out"))
    assert cfg2 == cfg
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fp8_block_scaled_weights_are_dequantized_on_import(hf_moe, tmp_path):
    """An E4M3 weight with 128x128 block scales (weight_scale_inv), as in the DeepSeek-V3/R1
    release, imports as w * scale per block (NumPy reference); an MTP layer is ignored."""
    from safetensors.numpy import load_file, save_file

    src, _ = hf_moe["deepseek_v3"]
    tensors = load_file(f"{src}/model.safetensors")
    rng = np.random.default_rng(0)
    name = "model.layers.1.mlp.experts.3.gate_proj.weight"  # [16, 32]: one partial block
    w8 = rng.normal(size=(16, 32)).astype(ml_fp8())
    scale = np.array([[0.5]], np.float32)
    tensors[name], tensors[name + "_scale_inv"] = w8, scale
    tensors["model.layers.2.mlp.gate.weight"] = np.zeros((8, 32), np.float32)  # MTP layer
    out = tmp_path / "fp8"
    out.mkdir()
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(open(f"{src}/config.json").read())
    _, params = hf_io.load_hf(str(out))
    want = w8.astype(np.float32) * 0.5
    np.testing.assert_array_equal(np.asarray(params["moe_layers"]["we_gate"][0, 3]), want.T)
    # The block arithmetic on a tensor spanning several blocks, against an explicit loop.
    w = rng.normal(size=(300, 200)).astype(ml_fp8())
    s = rng.uniform(0.5, 2, size=(3, 2)).astype(np.float32)
    ref = w.astype(np.float32).copy()
    for i in range(3):
        for j in range(2):
            ref[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128] *= s[i, j]
    np.testing.assert_array_equal(hf_io.dequantize_fp8(w, s), ref)


def ml_fp8():
    import ml_dtypes

    return ml_dtypes.float8_e4m3fn


def test_preset_parameter_counts_from_shapes_alone():
    """Totals within 0.5% of the published ones; activated counts truncate to the published
    (rounded-down) figures: DeepSeek-V3 671B / 37B, Qwen3-30B-A3B 30.5B / 3.3B.

    The issue's 0.5% for the activated counts is not met, and no one convention meets it for
    both: the shapes give 37.55B / 3.353B with the embedding table and LM head (1.5% / 1.6%
    above), 36.63B / 3.042B without the input table (a token reads one row). DeepSeek's
    README_WEIGHTS says 36.7B "including 0.9B for Embedding and 0.9B for the output Head", which
    matches the second count, not the first; Qwen's 3.3B matches only the first, truncated."""
    for name, total, active in [("deepseek-v3", 671e9, 37e9), ("qwen3-30b-a3b", 30.5e9, 3.3e9)]:
        cfg = get_preset(name)
        n, a = tfm.count_params(cfg), tfm.count_active_params(cfg)
        assert abs(n - total) / total < 0.005, (name, n)
        digits = 0 if active > 10e9 else 1
        assert math.floor(a / 1e9 * 10**digits) == round(active / 1e9 * 10**digits), (name, a)
    # Moonlight's report counts without the embedding and the LM head: 15.29B / 2.24B.
    moon = get_preset("moonlight-16b-a3b")
    emb = 2 * moon.vocab_size * moon.d_model
    assert round((tfm.count_params(moon) - emb) / 1e9, 2) == 15.29
    assert round((tfm.count_active_params(moon) - emb) / 1e9, 2) == 2.24


def test_expert_parallel_grpo_step_equals_single_device(monkeypatch):
    """One GRPO update (objective.grpo_loss through update.make_train_step: 2 micro-batches of 8,
    the sequence-wise balance loss, the balancing hook) with the experts sharded over an "expert"
    axis of 4 (x fsdp 2) on 8 fake devices equals the single-device update within 1e-5
    (dropless, V3 routing with a non-zero bias): the loss and metrics (the forward), and the new
    parameters, which with SGD at lr 1 are params - gradients, so every gradient is compared.
    The update builder sets the mesh itself (no jax.set_mesh here), so the step traces the
    shard_map path: what the GRPO trainer runs."""
    import optax

    from r1jax import sharding as shd
    from r1jax import update
    from r1jax.rl import losses, objective

    cfg = ModelConfig(
        64, 32, 1, 4, 4, 8, 48, "deepseek_v3", init_std=0.2, n_experts=8, n_experts_per_tok=2,
        moe_d_ff=16, router="sigmoid", n_group=4, topk_group=2, norm_topk_prob=True,
        routed_scaling=2.5,
    )  # fmt: skip
    params = tfm.init_params(cfg, jax.random.PRNGKey(0))
    params["moe_layers"]["router_bias"] = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (1, 8))
    params = jax.tree.map(np.asarray, params)  # host copies: the steps donate their state
    rng = np.random.default_rng(0)
    tok, mask = left_padded_batch(rng, 64, [8, 5, 7, 8, 6, 8, 4, 7] * 2, 8)
    rows = {"tokens": tok, "attn": mask, "mask": mask[:, 4:].astype(np.float32)}
    rows["adv"] = rng.normal(size=16).astype(np.float32)
    rows["sampler_logp"] = np.zeros((16, 4), np.float32)
    rows["experts"] = np.argsort(rng.normal(size=(16, 1, 8, 8)), -1)[..., :2].astype(np.int32)
    loss_fn = functools.partial(
        objective.grpo_loss, policy_loss=losses.policy_loss, loss_cfg={"beta": 0.0},
        router_aux_coef=0.1, cfg=cfg, prompt_len=4, temperature=1.0, vocab_chunk=64,
    )  # fmt: skip
    prepare = functools.partial(objective.token_weights, loss_type="grpo", max_len=4)
    opt = optax.sgd(1.0)
    seen = []  # the expert-axis size each traced MoE layer saw
    traced = moe.expert_parallelism
    monkeypatch.setattr(moe, "expert_parallelism", lambda: seen.append(traced()) or seen[-1])

    def one_step(mesh):
        p = jax.device_put(params, tfm.param_shardings(cfg, mesh))
        state = update.init_state(p, opt, mesh)
        batch, bs = update.put_batch(mesh, rows, 8)  # 8 rows: the mesh's 8 batch shards
        step = update.make_train_step(
            loss_fn, opt, state_shardings=update.shardings_of(state), batch_shardings=bs,
            prepare=prepare, after_update=moe.balancing_hook(cfg, 1e-3),
        )  # fmt: skip
        return step(state, batch)

    ref_state, ref_m = one_step(shd.make_mesh((("fsdp", 1),)))
    assert seen == [1]
    mesh = shd.make_mesh((("fsdp", 2), ("expert", 4)))
    assert tfm.param_shardings(cfg, mesh)["moe_layers"]["we_gate"].spec[1] == "expert"
    ep_state, ep_m = one_step(mesh)
    assert seen == [1, 4]
    for k in ("loss", "entropy", "moe_balance_loss", "routing_disagreement", "grad_norm"):
        np.testing.assert_allclose(float(ep_m[k]), float(ref_m[k]), rtol=1e-5, err_msg=k)
    assert float(ref_m["grad_norm"]) > 0 and float(ref_m["routing_disagreement"]) > 0
    got, want = ep_state["params"], ref_state["params"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    bias = np.asarray(want["moe_layers"]["router_bias"])
    assert np.abs(bias - np.asarray(params["moe_layers"]["router_bias"])).max() > 0


def test_upcycled_moe_equals_its_dense_base_and_routing_replay_is_reported():
    """moe.upcycle without noise computes the dense model exactly (normalised gates over copies
    of the MLP). GRPO's loss on a MoE policy: the rollout's recorded experts are replayed when
    asked (then the update routes exactly as the rollout did), and the disagreement between
    them and the current router equals a NumPy set comparison, 0 for unchanged parameters."""
    from r1jax.rl import objective

    dense = ModelConfig(64, 32, 2, 4, 2, 8, 24)
    dp = tfm.init_params(dense, jax.random.PRNGKey(0))
    cfg = dense.replace(
        n_experts=4, n_experts_per_tok=2, moe_d_ff=24, first_k_dense=1, norm_topk_prob=True,
        init_std=0.5,
    )  # fmt: skip
    tok, mask = left_padded_batch(np.random.default_rng(0), 64, [8, 6], 8)
    tok, mask = jnp.asarray(tok), jnp.asarray(mask)
    np.testing.assert_allclose(
        logits_jit(moe.upcycle(dp, cfg, jax.random.PRNGKey(1)), tok, mask, cfg),
        logits_jit(dp, tok, mask, dense),
        atol=1e-5,
    )
    rollout_params = moe.upcycle(dp, cfg, jax.random.PRNGKey(1), noise=0.2)
    mb = {"tokens": tok, "attn": mask, "mask": mask[:, 4:], "adv": jnp.ones(2)}
    mb.update(weight=jnp.ones((2, 4)), sampler_logp=jnp.zeros((2, 4)))
    kw = dict(cfg=cfg, prompt_len=4, temperature=1.0, vocab_chunk=64)
    record = jax.jit(functools.partial(objective.rollout_experts, **kw))
    experts = record(rollout_params, mb)
    assert experts.shape == (2, 1, 8, 2)  # [B, MoE layers, S, k]

    def pl(logp, old, ref, adv, m, w, c):
        return -(logp * m).sum(), {"logp_sum": ((logp * m).sum(), jnp.ones(()))}

    loss = jax.jit(
        functools.partial(objective.grpo_loss, policy_loss=pl, loss_cfg=None, **kw),
        static_argnames="routing_replay",
    )
    mb = {**mb, "experts": experts}
    _, same = loss(rollout_params, mb, {}, routing_replay=False)
    assert float(same["routing_disagreement"][0]) == 0.0
    moved = jax.tree.map(lambda a: a, rollout_params)
    moved["moe_layers"]["router"] = rollout_params["moe_layers"][
        "router"
    ] + 0.5 * jax.random.normal(jax.random.PRNGKey(2), rollout_params["moe_layers"]["router"].shape)
    now = np.asarray(record(moved, mb))
    was = np.asarray(experts)
    differ = sum(len(set(now[b, 0, s]) - set(was[b, 0, s])) for b in range(2) for s in range(8)
                 if mask[b, s])  # fmt: skip
    assert differ > 0
    for replay in (False, True):
        _, m = loss(moved, mb, {}, routing_replay=replay)
        n, d = m["routing_disagreement"]
        assert float(n) == differ and float(d) == 2 * int(mask.sum())
    # Replayed: the loss equals the forward that routes with the rollout's experts.
    _, m = loss(moved, mb, {}, routing_replay=True)
    logp, _ = jax.jit(tfm.target_logprobs, static_argnums=4, static_argnames="first")(
        moved, tok, tfm.positions_from_mask(mask), mask, cfg, first=4,
        replay=experts.transpose(1, 0, 2, 3),
    )  # fmt: skip
    np.testing.assert_allclose(
        float(m["logp_sum"][0]), float((logp * mask[:, 4:]).sum()), rtol=1e-6
    )
    _, m_free = loss(moved, mb, {}, routing_replay=False)
    assert float(m_free["logp_sum"][0]) != pytest.approx(float(m["logp_sum"][0]), rel=1e-6)


def test_balancing_bias_is_updated_after_the_optimizer_step_from_the_batch_loads():
    """Through update.make_train_step (2 micro-batches) with AdamW and weight decay: the bias
    ends at update_router_bias(bias, loads summed over the whole batch), untouched by the
    optimizer and its decay; the loads never reach the returned metrics."""
    import ml_collections

    from r1jax import optim, update
    from r1jax import sharding as shd
    from r1jax.configs import common

    cfg = ModelConfig(
        16, 8, 1, 2, 2, 4, 8, n_experts=4, n_experts_per_tok=2, moe_d_ff=4, router="sigmoid"
    )
    rng = np.random.default_rng(0)
    lp = {k: rng.normal(size=s).astype(np.float32) for k, s in [
        ("router", (1, 8, 4)), ("we_gate", (1, 4, 8, 4)), ("we_up", (1, 4, 8, 4)),
        ("we_down", (1, 4, 4, 8))]}  # fmt: skip
    lp["router_bias"] = np.full((1, 4), 0.5, np.float32)
    x = rng.normal(size=(4, 3, 8)).astype(np.float32)

    def loss_fn(params, mb, ctx):
        one = jax.tree.map(lambda a: a[0], params["moe_layers"])
        y, routing = moe.moe_ffn(mb["x"], one, cfg)
        return (y**2).mean(), {"moe_load_per_expert": (routing["load"][None], jnp.ones(()))}

    mesh = shd.make_mesh((("fsdp", 1),))
    ocfg = ml_collections.ConfigDict(common.optim(lr=1e-2, weight_decay=0.5))
    opt, _ = optim.make_optimizer(ocfg)
    state = update.init_state({"moe_layers": jax.tree.map(jnp.asarray, lp)}, opt, mesh)
    batch, bs = update.put_batch(mesh, {"x": x}, 2)
    step = update.make_train_step(
        loss_fn, opt, state_shardings=update.shardings_of(state), batch_shardings=bs,
        after_update=moe.balancing_hook(cfg, ocfg.router_bias_speed),
    )  # fmt: skip
    _, routing = moe_ffn(jnp.asarray(x), jax.tree.map(lambda a: jnp.asarray(a[0]), lp), cfg)
    want = moe.update_router_bias(jnp.asarray(lp["router_bias"]), routing["load"][None], 1e-3)
    assert not np.allclose(want, lp["router_bias"])
    state, metrics = step(state, batch)
    np.testing.assert_allclose(state["params"]["moe_layers"]["router_bias"], want, atol=1e-7)
    assert "moe_load_per_expert" not in metrics
    assert not np.allclose(state["params"]["moe_layers"]["router"], lp["router"])  # trained


def test_planner_counts_experts_and_the_mla_cache():
    """The planner's parameter bytes count every expert and split them over the expert axis
    (the shapes alone); its cache estimate for MLA equals eval_shape's prefill + init_suffix."""
    from r1jax import plan as pl

    v3 = get_preset("deepseek-v3", param_dtype="bfloat16")
    one, ep = pl.abstract_mesh({}), pl.abstract_mesh({"fsdp": 8, "expert": 8})
    experts = 3 * v3.n_experts * v3.d_model * v3.moe_d_ff * (v3.n_layers - v3.first_k_dense)
    assert pl.param_bytes(v3, one) == 2 * tfm.count_params(v3)
    # every weight of shape [.., D, ..] splits 8 ways over fsdp; the experts 8 more over expert
    assert (
        pl.param_bytes(v3, ep) < 2 * (tfm.count_params(v3) - experts) / 8 + 2 * experts / 64 + 1e9
    )
    cfg = ModelConfig(
        64, 32, 2, 4, 4, 8, 48, "deepseek_v3", kv_lora_rank=16, qk_rope_dim=8, v_head_dim=12,
    )  # fmt: skip
    B, G, P, T = 2, 3, 8, 16
    s = pl.Settings(B, G, P, T, micro_batch=1, decode_chunk=16)
    tok = jax.ShapeDtypeStruct((B, P), jnp.int32)
    _, prefix = jax.eval_shape(
        lambda p, t: tfm.prefill(p, t, t, cfg), tfm.abstract_params(cfg), tok
    )
    suffix = jax.eval_shape(lambda: tfm.init_suffix(cfg, B * G, 16))
    nbytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves((prefix, suffix)))
    assert pl.kv_cache_bytes(cfg, one, s) == nbytes


def test_grpo_trains_the_embedded_base_upcycled_to_a_moe(tmp_path):
    """The embedded dense base upcycled (moe.upcycle: 4 experts copied from each MLP after the
    first layer, top-2, sigmoid router with the balancing bias) computes the dense model's
    logits without noise; with 1% noise the real R1-Zero GRPO stage (configs/r1zero.py's
    embedded job: sumchain, math accuracy + format rewards, 64 new tokens; here 8 prompts x 8
    samples, constant lr 3e-4, no reference, 8 steps, seed 0) trains it with routing replay and
    the sequence-wise balance loss, reports the router metrics, moves the balancing bias, and
    raises the reward: mean of steps 6-8 over steps 1-2, measured 1.04 -> 1.41 (accuracy 0.18
    -> 0.43), pinned at +0.2. Other seeds (1, 2) measured +0.28, +0.30; the same run at lr
    1e-12 (no learning) +0.06 (benchmarks/RESULTS.md, "GRPO on the upcycled embedded base").
    Time budget: 90 s on the 2-core CI machine (measured 84 s, 85 s of CPU, with other jobs
    at load average ~4: the first step, compiling, 26 s, then 5-8 s a step)."""
    from r1jax import configs
    from r1jax.metrics import read_metrics
    from r1jax.models.store import EMBEDDED_BASE, load_model, save_model, tokenizer_path
    from r1jax.stages import grpo

    dense_cfg, dense = load_model(EMBEDDED_BASE)
    cfg = dense_cfg.replace(
        n_experts=4, n_experts_per_tok=2, moe_d_ff=dense_cfg.d_ff, first_k_dense=1,
        router="sigmoid", norm_topk_prob=True,
    )  # fmt: skip
    tok, mask = left_padded_batch(np.random.default_rng(0), dense_cfg.vocab_size, [24, 17], 24)
    tok, mask = jnp.asarray(tok), jnp.asarray(mask)
    np.testing.assert_allclose(
        logits_jit(moe.upcycle(dense, cfg, jax.random.PRNGKey(1)), tok, mask, cfg),
        logits_jit(dense, tok, mask, dense_cfg),
        atol=1e-4,  # logits of size ~15
    )
    moe_dir = str(tmp_path / "moe")
    params = moe.upcycle(dense, cfg, jax.random.PRNGKey(0), noise=0.01)
    save_model(moe_dir, params, cfg, tokenizer_path(EMBEDDED_BASE))
    c = configs.load("r1zero")  # the embedded job's data, rewards and sampling
    c.model.init = moe_dir
    c.model.overrides.unroll_decode = False  # not for MoE layers
    c.mesh = (("fsdp", 1),)
    c.sampling.update(num_prompts=8, num_samples=8)
    c.rl.update(beta=0.0, num_minibatches=1, routing_replay=True, router_aux_coef=1e-2)
    c.micro_batch = 64
    c.optim.update(lr=3e-4, warmup_steps=0, schedule="constant")
    c.update(steps=8, ckpt_every=100, eval_every=0, samples_every=0)
    trainer = grpo.GRPO(c, str(tmp_path / "run"))
    trainer.run()
    rows = read_metrics(str(tmp_path / "run"))
    assert len(rows) == 8
    reward = [r["train/reward"] for r in rows]  # accuracy + format, in [0, 2]
    assert np.mean(reward[-3:]) > np.mean(reward[:2]) + 0.2, reward
    for r in rows:
        # One update per rollout: the update's router is the rollout's, so the recorded
        # (replayed) choices are exactly its own.
        assert r["train/routing_disagreement"] == 0.0
        assert 0.0 < r["train/moe_router_entropy"] <= math.log(4)
        assert r["train/moe_max_load_max"] >= 1.0
        assert r["train/moe_balance_loss"] > 0  # summed over the 3 MoE layers; 1.0 each balanced
    bias = np.asarray(trainer.state["train"]["params"]["moe_layers"]["router_bias"])
    assert np.abs(bias).max() > 0  # balancing ran (speed 1e-3 per update)
