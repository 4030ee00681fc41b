"""DeepSeekMoE / Qwen3-MoE feed-forward layers: a router, routed experts and shared experts.

Routing (per token, scores and gates in fp32):
  softmax  (DeepSeek-V2, Qwen3-MoE): p = softmax(logits); with n_group > 1 only the topk_group
           groups with the largest max-p are eligible (V2 "group_limited_greedy"); the gates are
           the top-k p (renormalised to sum 1 if norm_topk_prob), times routed_scaling.
  sigmoid  (DeepSeek-V3 "noaux_tc"): s = sigmoid(logits); the choice ranks s + bias, where the
           bias is the auxiliary-loss-free balancing state (no gradient); the eligible groups are
           the topk_group with the largest sum of their two best s + bias; the gates are the
           chosen s *without* the bias, normalised, times routed_scaling.

Dispatch: the T*k (token, expert) assignments are sorted by expert and run as three grouped
matmuls, so each expert sees only its own tokens; nothing is computed for an expert that no token
chose, and there is no dense [T, E, F] intermediate. The grouped matmuls are `jax.lax.ragged_dot`
or, on CPU by default (cfg.expert_matmul), each expert's run padded to whole blocks and one
batched matmul over the blocks (at most one block of padding per expert). Dropless by
default. With cfg.capacity_factor = c > 0 an expert keeps at most ceil(c * T * k / E)
assignments (earliest tokens first) and the rest contribute nothing (their token keeps the
residual and the shared experts): the GShard/Switch semantics, reported as `dropped`; shapes stay
static, so this changes the result, not the compute.

Expert parallelism: with a mesh set (jax.set_mesh) whose "expert" axis is > 1, the batch is
split over that axis too; each device gathers its expert group's tokens, runs its own experts on
them and a reduce-scatter returns the summed outputs (see routed_experts). With
cfg.expert_dispatch="all_to_all" each assignment is sent to its expert's device instead, in
static buffers per destination: dropless they must hold the worst case (all of a device's
assignments to one device), so they are as large as the gather form's; only a capacity factor
makes them smaller (and drops what does not fit). jax.lax.ragged_all_to_all, which would send
only the real rows, exists in jax 0.10.2 but XLA:CPU does not implement it. The update
builder's and the rollout sampler's jitted functions set their mesh (sharding.under_mesh).
Balancing: update_router_bias / balancing_hook (after each optimizer step, from the step's
loads), sequence_balance_loss (optional auxiliary loss). GRPO: routing replay (moe_ffn's
replay_NTK) and `disagreement`.

Einsum letters: t tokens (rows x positions flattened), d model, e experts, f expert hidden,
k experts per token, a assignments (t*k), n blocks and b rows of a block (the blocked dispatch).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from r1jax.models.config import ModelConfig

f32 = jnp.float32


def route(x_TD, lp, cfg: ModelConfig):
    """(gates [T,k] fp32, experts [T,k] int32, probs [T,E]: the normalised router distribution)."""
    E, k = cfg.n_experts, cfg.n_experts_per_tok
    logits = x_TD.astype(f32) @ lp["router"].astype(f32)  # [T,E]
    if cfg.router == "sigmoid":
        scores = jax.nn.sigmoid(logits)
        choice = scores + jax.lax.stop_gradient(lp["router_bias"].astype(f32))
        fill = -jnp.inf
    else:
        scores = jax.nn.softmax(logits, axis=-1)
        choice, fill = scores, 0.0
    if cfg.n_group > 1:
        grouped = choice.reshape(-1, cfg.n_group, E // cfg.n_group)
        if cfg.router == "sigmoid":
            group_score = jax.lax.top_k(grouped, 2)[0].sum(-1)
        else:
            group_score = grouped.max(-1)
        _, top_groups = jax.lax.top_k(group_score, cfg.topk_group)  # [T, topk_group]
        keep = (
            jnp.zeros(group_score.shape, bool)
            .at[jnp.arange(group_score.shape[0])[:, None], top_groups]
            .set(True)
        )
        keep = jnp.repeat(keep, E // cfg.n_group, axis=-1)
        choice = jnp.where(keep, choice, fill)
    _, experts = jax.lax.top_k(choice, k)
    gates = jnp.take_along_axis(scores, experts, axis=-1)
    if cfg.norm_topk_prob:
        gates = gates / (gates.sum(-1, keepdims=True) + (1e-20 if cfg.router == "sigmoid" else 0))
    probs = scores if cfg.router == "softmax" else scores / scores.sum(-1, keepdims=True)
    return gates * cfg.routed_scaling, experts.astype(jnp.int32), probs


def _swiglu(x, w_gate, w_up, w_down, dt):
    h = jax.nn.silu(x @ w_gate.astype(dt)) * (x @ w_up.astype(dt))
    return h @ w_down.astype(dt)


def capacity(cfg: ModelConfig, n_tokens: int) -> int | None:
    if not cfg.capacity_factor:
        return None
    return math.ceil(cfg.capacity_factor * n_tokens * cfg.n_experts_per_tok / cfg.n_experts)


def routed_experts(x_TD, gates_TK, experts_TK, lp, cfg: ModelConfig):
    """sum_k gate[t,k] * expert_{e[t,k]}(x[t]) by sorted dispatch. Returns (y [T,D], kept [T,k]).

    Under a mesh (jax.set_mesh) with an "expert" axis of size n > 1, each device holds E/n
    experts (the weights are sharded so by sharding.RULES) and its T/n tokens (the batch is
    split over the expert axis too): it all-gathers the tokens of its expert group, runs only
    the assignments to its own experts, and a reduce-scatter sums the partial outputs and hands
    each device back its own tokens' (the gather form of expert parallelism). With T not
    divisible by n the tokens come replicated and one psum adds the partial outputs.
    cfg.expert_dispatch="all_to_all" (T divisible by n): see _all_to_all_ffn; its buffers can
    drop more assignments under a capacity factor, and `kept` reports them."""
    T, k = experts_TK.shape
    kept = jnp.ones((T * k,), bool)
    cap = capacity(cfg, T)
    if cap is not None:  # rank of each assignment within its expert, in token order
        flat_e = experts_TK.reshape(-1)
        order = jnp.argsort(flat_e, stable=True)
        sizes = jnp.bincount(flat_e, length=cfg.n_experts)
        rank = jnp.arange(T * k) - (jnp.cumsum(sizes) - sizes)[flat_e[order]]
        kept = kept.at[order].set(rank < cap)
    w_TK = jnp.where(kept.reshape(T, k), gates_TK, 0.0)
    weights = (lp["we_gate"], lp["we_up"], lp["we_down"])
    n = expert_parallelism()
    if n == 1:
        return _grouped_ffn(x_TD, experts_TK, w_TK, *weights, cfg), kept.reshape(T, k)
    if cfg.n_experts % n:
        raise ValueError(f"ModelConfig.n_experts={cfg.n_experts} not divisible by expert axis {n}")
    split = T % n == 0
    P = jax.sharding.PartitionSpec
    if split and cfg.expert_dispatch == "all_to_all":
        c = cfg.capacity_factor
        per_dst = (T // n) * k  # dropless: all of a device's assignments may go to one device
        if c:
            per_dst = min(per_dst, math.ceil(c * per_dst / n))
        ffn = functools.partial(_all_to_all_ffn, n=n, per_dst=per_dst, cfg=cfg)
        y, kept = jax.shard_map(
            ffn,
            in_specs=(P("expert"),) * 7,
            out_specs=(P("expert"), P("expert")),
            axis_names={"expert"},
            check_vma=False,
        )(x_TD, experts_TK, w_TK, kept.reshape(T, k), *weights)
        return y, kept

    def local(x, e, w, wg, wu, wd):
        if split:  # this device's tokens -> the expert group's
            x, e, w = (jax.lax.all_gather(a, "expert", tiled=True) for a in (x, e, w))
        first = jax.lax.axis_index("expert") * wg.shape[0]
        mine = (e >= first) & (e < first + wg.shape[0])
        e_loc = jnp.where(mine, e - first, wg.shape[0])  # others: past the last group
        y = _grouped_ffn(x, e_loc, jnp.where(mine, w, 0.0), wg, wu, wd, cfg)
        if split:
            return jax.lax.psum_scatter(y, "expert", tiled=True)
        return jax.lax.psum(y, "expert")

    tok = P("expert") if split else P()
    y = jax.shard_map(
        local,
        in_specs=(tok, tok, tok, P("expert"), P("expert"), P("expert")),
        out_specs=tok,
        axis_names={"expert"},
        # With the default check_vma=True, jax 0.10.2 gave a wrong gradient for x in the psum
        # form (not summed over the axis); the collectives are explicit, so no check is needed.
        check_vma=False,
    )(x_TD, experts_TK, w_TK, *weights)
    return y, kept.reshape(T, k)


def _all_to_all_ffn(x_TD, e_TK, w_TK, kept_TK, wg, wu, wd, *, n, per_dst, cfg):
    """Inside shard_map, on this device's T tokens: each kept assignment goes to the device of
    its expert (E/n experts per device) in one all_to_all of [n, per_dst] rows (in token order;
    an assignment past per_dst is dropped), the experts run on what arrived, and a second
    all_to_all brings the outputs back, weighted and summed per token. Returns (y, kept)."""
    T, k = e_TK.shape
    El, D, C = wg.shape[0], x_TD.shape[-1], per_dst
    dst = e_TK.reshape(-1) // El  # [A]
    live = kept_TK.reshape(-1)
    onehot = jax.nn.one_hot(dst, n, dtype=jnp.int32) * live[:, None]  # [A,n]
    rank = jnp.take_along_axis(jnp.cumsum(onehot, 0) - onehot, dst[:, None], 1)[:, 0]
    sent = live & (rank < C)
    slot = jnp.where(sent, dst * C + rank, n * C)  # n * C: out of range, not written
    x_A = x_TD.astype(jnp.dtype(cfg.dtype))[jnp.arange(T * k) // k]
    buf_x = jnp.zeros((n * C, D), x_A.dtype).at[slot].set(x_A, mode="drop")
    buf_e = jnp.full((n * C,), El, jnp.int32).at[slot].set(e_TK.reshape(-1) % El, mode="drop")

    def exchange(a):  # row block j goes to device j; block j received came from device j
        return jax.lax.all_to_all(a.reshape(n, C, *a.shape[1:]), "expert", 0, 0).reshape(a.shape)

    recv_x, recv_e = exchange(buf_x), exchange(buf_e)  # empty slots: expert El, no group
    y = _grouped_ffn(recv_x, recv_e[:, None], jnp.ones((n * C, 1), f32), wg, wu, wd, cfg)
    back = exchange(y)[jnp.minimum(slot, n * C - 1)]  # [A,D]: each assignment's output
    w = jnp.where(sent, w_TK.reshape(-1), 0.0)
    y_TD = (back.astype(f32) * w[:, None]).reshape(T, k, D).sum(1)
    return y_TD.astype(x_A.dtype), sent.reshape(T, k)


def expert_parallelism() -> int:
    """Size of the "expert" axis of the mesh set with jax.set_mesh (1 without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or "expert" not in mesh.axis_names:
        return 1
    return mesh.shape["expert"]


def matmul_form(cfg: ModelConfig) -> str:
    """cfg.expert_matmul, "auto" resolved: blocked on CPU, where XLA's ragged_dot costs several
    times the same matmuls done densely (benchmarks/RESULTS.md, "MoE"), else ragged_dot (a
    grouped GEMM on GPU and TPU)."""
    if cfg.expert_matmul != "auto":
        return cfg.expert_matmul
    return "blocked" if jax.default_backend() == "cpu" else "ragged"


def block_size(n_assign: int, n_experts: int) -> int:
    """Rows per block of the blocked dispatch: the power of two at or below A / (4E), within
    [16, 512]. Padding adds under one block per expert (at most a quarter of A at that size),
    and each block copies its expert's weights, so the blocks should stay few (about 5E)."""
    b = 1 << max(0, (n_assign // (4 * n_experts)).bit_length() - 1)
    return min(512, max(16, b))


def block_layout(sizes_E, n_assign: int, b: int):
    """Assignments sorted by expert (sizes_E of each, in order; any rest belong to no expert)
    laid out so that each expert's run fills whole blocks of b rows: (src [nb, b], the sorted
    assignment in each slot or n_assign for an empty one; expert [nb] of each block). nb =
    (A + E(b-1)) // b >= sum_e ceil(n_e / b) for any sizes: static shapes, unused blocks empty."""
    E = sizes_E.shape[0]
    nb = (n_assign + E * (b - 1)) // b
    blocks = (sizes_E + b - 1) // b
    end = jnp.cumsum(blocks)  # one past each expert's last block
    j = jnp.arange(nb)
    expert = jnp.minimum(jnp.searchsorted(end, j, side="right"), E - 1)
    rank = (j - (end - blocks)[expert])[:, None] * b + jnp.arange(b)  # within the expert's run
    first = jnp.cumsum(sizes_E) - sizes_E  # the expert's first sorted assignment
    src = jnp.where(rank < sizes_E[expert][:, None], first[expert][:, None] + rank, n_assign)
    return src, expert


def _grouped_ffn(x_TD, experts_TK, w_TK, w_gate, w_up, w_down, cfg: ModelConfig):
    """Assignments sorted by expert, three grouped matmuls, weighted scatter-add back. Expert
    ids >= len(w_gate) fall past the last group: no block holds them, ragged_dot leaves their
    rows zero. Grouped matmuls: ragged_dot, or (blocked) each expert's run padded to whole
    blocks (block_layout) and one batched matmul over the blocks with each block's expert's
    weights; the same sums either way."""
    dt = jnp.dtype(cfg.dtype)
    T, k = experts_TK.shape
    E, A = w_gate.shape[0], T * k
    flat_e = experts_TK.reshape(-1)  # [A]
    order = jnp.argsort(flat_e, stable=True)  # assignments grouped by expert, tokens in order
    token, w = order // k, w_TK.reshape(-1)[order]
    sizes = jnp.bincount(flat_e, length=E).astype(jnp.int32)
    wg, wu, wd = (a.astype(dt) for a in (w_gate, w_up, w_down))
    if matmul_form(cfg) == "blocked":
        src, expert = block_layout(sizes, A, block_size(A, E))
        token = jnp.append(token, 0)[src]  # [nb, b]; an empty slot: token 0 with weight 0
        w = jnp.append(w, 0.0)[src].reshape(-1)
        x = x_TD.astype(dt)[token]
        h = jax.nn.silu(jnp.einsum("nbd,ndf->nbf", x, wg[expert]))
        h = h * jnp.einsum("nbd,ndf->nbf", x, wu[expert])
        y = jnp.einsum("nbf,nfd->nbd", h, wd[expert]).reshape(-1, x_TD.shape[-1])
        token = token.reshape(-1)
    else:
        x = x_TD.astype(dt)[token]  # [A,D]
        h = jax.nn.silu(jax.lax.ragged_dot(x, wg, sizes)) * jax.lax.ragged_dot(x, wu, sizes)
        y = jax.lax.ragged_dot(h, wd, sizes)  # [A,D]
    y = jnp.zeros((T, x_TD.shape[-1]), f32).at[token].add(y.astype(f32) * w[:, None])
    return y.astype(dt)


def moe_ffn(x_NTD, lp, cfg: ModelConfig, valid_NT=None, replay_NTK=None):
    """The MoE feed-forward of a normalised input: (y [N,T,D], routing dict).

    replay_NTK: expert choices to use instead of the router's (routing replay); the gates are
    the router's current scores of those experts, so gradients still reach the router.
    routing: experts [N,T,k] and the metric sums of `router_stats`.
    """
    n, t, d = x_NTD.shape
    x = x_NTD.reshape(n * t, d)
    gates, experts, probs = route(x, lp, cfg)
    own = experts  # the router's own choice, kept for the disagreement metric
    if replay_NTK is not None:
        experts = replay_NTK.reshape(n * t, -1).astype(jnp.int32)
        gates = _replayed_gates(x, experts, lp, cfg)
    y, kept = routed_experts(x, gates, experts, lp, cfg)
    if cfg.n_shared_experts:
        dt = jnp.dtype(cfg.dtype)
        y = y + _swiglu(x.astype(dt), lp["ws_gate"], lp["ws_up"], lp["ws_down"], dt)
    valid = jnp.ones((n * t,), bool) if valid_NT is None else valid_NT.reshape(-1)
    stats = router_stats(experts, kept, probs, valid, cfg)
    stats["balance_loss_N"] = sequence_balance_loss(
        experts.reshape(n, t, -1), probs.reshape(n, t, -1), valid.reshape(n, t), cfg.n_experts
    )
    routing = {"experts": experts.reshape(n, t, -1), "router_experts": own.reshape(n, t, -1)}
    return y.reshape(n, t, d), {**routing, **stats}


def _replayed_gates(x_TD, experts_TK, lp, cfg: ModelConfig):
    logits = x_TD.astype(f32) @ lp["router"].astype(f32)
    scores = jax.nn.sigmoid(logits) if cfg.router == "sigmoid" else jax.nn.softmax(logits, -1)
    gates = jnp.take_along_axis(scores, experts_TK, axis=-1)
    if cfg.norm_topk_prob:
        gates = gates / (gates.sum(-1, keepdims=True) + 1e-20)
    return gates * cfg.routed_scaling


def router_stats(experts_TK, kept_TK, probs_TE, valid_T, cfg: ModelConfig) -> dict:
    """Sums over real (non-padding) tokens: load [E] (assignments per expert), dropped
    assignments, router entropy (nats, summed over tokens) and the token count."""
    w = valid_T.astype(f32)
    onehot = jax.nn.one_hot(experts_TK, cfg.n_experts, dtype=f32)  # [T,k,E]: small, stats only
    load = jnp.einsum("tke,t->e", onehot, w)
    dropped = jnp.sum((~kept_TK).astype(f32) * w[:, None])
    entropy = -jnp.sum(probs_TE * jnp.log(jnp.maximum(probs_TE, 1e-30)), axis=-1)
    return {"load": load, "dropped": dropped, "entropy": jnp.sum(entropy * w), "tokens": w.sum()}


def sequence_balance_loss(experts_NTK, probs_NTE, valid_NT, n_experts: int):
    """DeepSeek-V3's sequence-wise balance loss per row (eq. 17-20, without the coefficient):
    sum_e f_e * P_e, f_e = E / (k * T) * #tokens sent to e, P_e = the mean normalised affinity
    of e, both over the row's T real tokens. 1.0 when perfectly balanced."""
    k = experts_NTK.shape[-1]
    w = valid_NT.astype(f32)
    count = jnp.einsum("ntke,nt->ne", jax.nn.one_hot(experts_NTK, n_experts, dtype=f32), w)
    tokens = jnp.maximum(w.sum(-1, keepdims=True), 1.0)
    f = n_experts / (k * tokens) * count
    p = jnp.einsum("nte,nt->ne", probs_NTE, w) / tokens
    return jnp.sum(f * p, axis=-1)


def summarize(routing: dict) -> dict:
    """Per-step router metrics from the stacked per-layer sums of a forward pass ([L, ...]):
    load fraction per layer and expert, max/mean load (1.0 = perfectly balanced), dropped
    fraction, mean routing entropy."""
    load = routing["load"]  # [L,E]
    frac = load / jnp.maximum(load.sum(-1, keepdims=True), 1.0)
    tokens = jnp.maximum(routing["tokens"].sum(), 1.0)
    return {
        "moe_load": frac,
        "moe_max_load": jnp.max(frac * load.shape[-1]),
        "moe_dropped_frac": routing["dropped"].sum() / jnp.maximum(load.sum(), 1.0),
        "moe_entropy": routing["entropy"].sum() / tokens,
    }


def update_router_bias(bias_LE, load_LE, speed: float):
    """Auxiliary-loss-free balancing (DeepSeek-V3 section 2.1.2): each expert's bias moves by
    `speed` up if it got fewer than the mean number of assignments, down if more."""
    mean = load_LE.mean(-1, keepdims=True)
    return bias_LE + speed * jnp.sign(mean - load_LE).astype(bias_LE.dtype)


def balancing_hook(cfg: ModelConfig, speed: float):
    """update.make_train_step's after_update for a sigmoid-routed MoE (None otherwise): the
    bias of every MoE layer moves against the step's loads (the loss's moe_load_per_expert),
    unless the step was skipped."""
    if not (cfg.n_experts and cfg.router == "sigmoid" and speed):
        return None

    def hook(state, metrics):
        layers = state["params"]["moe_layers"]
        bias = layers["router_bias"]
        new = update_router_bias(bias, metrics["moe_load_per_expert"], speed)
        new = jnp.where(metrics["skipped"] > 0, bias, new)
        params = {**state["params"], "moe_layers": {**layers, "router_bias": new}}
        return {**state, "params": params}

    return hook


def disagreement(experts_a_NTK, experts_b_NTK, valid_NT) -> jax.Array:
    """Fraction of (token, slot) expert choices of b not in a's set for the same token."""
    same = (experts_b_NTK[..., :, None] == experts_a_NTK[..., None, :]).any(-1)  # [N,T,k]
    w = valid_NT.astype(f32)[..., None]
    return jnp.sum((~same) * w) / jnp.maximum(jnp.sum(w) * same.shape[-1], 1.0)


def upcycle(dense_params, cfg: ModelConfig, key, noise: float = 0.0):
    """MoE parameters for `cfg` from a dense model of the same shapes (cfg without its MoE
    fields): each MoE layer's experts start as copies of that layer's MLP (moe_d_ff = d_ff),
    times (1 + noise * N(0, 1)) so that they can diverge; the router starts at N(0, init_std),
    the balancing bias at 0. With noise = 0 and norm_topk_prob the model computes exactly what
    the dense one did, whatever the routing."""
    if cfg.moe_d_ff != cfg.d_ff or cfg.n_shared_experts:
        raise ValueError("upcycle: needs moe_d_ff == d_ff and no shared experts")
    f, E = cfg.first_k_dense, cfg.n_experts
    dense = dense_params["layers"]
    head = jax.tree.map(lambda a: a[:f], dense)
    tail = {k: v[f:] for k, v in dense.items() if k not in ("w_gate", "w_up", "w_down")}
    keys = jax.random.split(key, 4)
    for i, (ours, theirs) in enumerate(
        [("we_gate", "w_gate"), ("we_up", "w_up"), ("we_down", "w_down")]
    ):
        w = jnp.repeat(dense[theirs][f:, None], E, axis=1)  # [L,E,...]
        tail[ours] = w * (1 + noise * jax.random.normal(keys[i], w.shape, w.dtype))
    L = cfg.n_layers - f
    tail["router"] = cfg.init_std * jax.random.normal(keys[3], (L, cfg.d_model, E))
    tail["router"] = tail["router"].astype(dense["w_gate"].dtype)
    if cfg.router == "sigmoid":
        tail["router_bias"] = jnp.zeros((L, E), dense["w_gate"].dtype)
    return {**dense_params, "layers": head, "moe_layers": tail}
