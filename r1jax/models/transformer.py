"""The decoder-only transformer as pure functions over a parameter pytree.

Every parameter is declared once in `param_specs` (shape, logical axes, initializer); init,
abstract shapes and shardings all derive from that table. Layers are stacked on a leading axis
and run under `lax.scan`, so compile time does not grow with depth.

Einsum letters: n rows (sequences), b prompts, g samples per prompt (n = b*g), t query
positions, s key positions, p prompt (prefix) positions, d model dim, k kv heads, r query heads
per kv head (H = k*r), h head dim, f MLP dim, v vocabulary.

Three entry points share one block:
  forward      full sequences (training, scoring, prefill); optional K/V out for a cache.
  decode_step  one new token per row against a KV cache laid out as a shared *prefix* (one per
               prompt, [L,B,K,*,*]) plus each row's own *suffix* ([L,N,K,*,*]; see init_suffix);
               the G samples of a prompt read the same prefix, so the prompt is prefilled once.
  token_logprobs  log-probs (and entropy) of given tokens from hidden states, computed in
               vocabulary chunks so that an [N,T,V] logits tensor never exists.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from r1jax import sharding as shd
from r1jax.models import attention as attn_lib
from r1jax.models import mla, moe
from r1jax.models.config import ModelConfig

f32 = jnp.float32
NEG_INF = attn_lib.NEG_INF
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    init: str  # "normal" (N(0, init_std)) | "ones" | "zeros"


def param_specs(cfg: ModelConfig) -> Params:
    L, D, H, K, Dh, F, V = (
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.d_ff,
        cfg.vocab_size,
    )
    n_dense = cfg.first_k_dense if cfg.n_experts else L  # MoE: the other layers in "moe_layers"
    lay = lambda *shape_axes, init="normal": ParamSpec(  # noqa: E731
        (n_dense,) + tuple(s for s, _ in shape_axes),
        ("layers",) + tuple(a for _, a in shape_axes),
        init,
    )
    layer = {
        "attn_norm": lay((D, "norm"), init="ones"),
        "wq": lay((D, "embed"), (H, "q_heads"), (Dh, "head_dim")),
        "wk": lay((D, "embed"), (K, "kv_heads"), (Dh, "head_dim")),
        "wv": lay((D, "embed"), (K, "kv_heads"), (Dh, "head_dim")),
        "wo": lay((H, "q_heads"), (Dh, "head_dim"), (D, "embed")),
        "mlp_norm": lay((D, "norm"), init="ones"),
        "w_gate": lay((D, "embed"), (F, "mlp")),
        "w_up": lay((D, "embed"), (F, "mlp")),
        "w_down": lay((F, "mlp"), (D, "embed")),
    }
    if cfg.qkv_bias:
        layer["bq"] = lay((H, "q_heads"), (Dh, "head_dim"), init="zeros")
        layer["bk"] = lay((K, "kv_heads"), (Dh, "head_dim"), init="zeros")
        layer["bv"] = lay((K, "kv_heads"), (Dh, "head_dim"), init="zeros")
    if cfg.qk_norm:
        layer["q_norm"] = lay((Dh, "norm"), init="ones")
        layer["k_norm"] = lay((Dh, "norm"), init="ones")
    if cfg.kv_lora_rank:  # MLA replaces the q/k/v/o projections
        keep = ("attn_norm", "mlp_norm", "w_gate", "w_up", "w_down")
        layer = {k: v for k, v in layer.items() if k in keep}
        layer.update({k: lay(*sa, init=i) for k, (sa, i) in mla.specs(cfg).items()})
    specs = {
        "embed": ParamSpec((V, D), ("vocab", "embed"), "normal"),
        "layers": layer,
        "final_norm": ParamSpec((D,), ("norm",), "ones"),
    }
    if cfg.n_experts:
        specs["moe_layers"] = _moe_layer_specs(cfg, layer)
    if not cfg.tie_embeddings:
        specs["lm_head"] = ParamSpec((V, D), ("vocab", "embed"), "normal")
    return specs


def _moe_layer_specs(cfg: ModelConfig, dense_layer: dict) -> dict:
    """The layers after first_k_dense: the same attention, the MLP replaced by moe.py's."""
    L, D, E, Fe = cfg.n_layers - cfg.first_k_dense, cfg.d_model, cfg.n_experts, cfg.moe_d_ff
    lay = lambda *shape_axes, init="normal": ParamSpec(  # noqa: E731
        (L,) + tuple(s for s, _ in shape_axes), ("layers",) + tuple(a for _, a in shape_axes), init
    )
    out = {
        k: ParamSpec((L,) + s.shape[1:], s.axes, s.init)
        for k, s in dense_layer.items()
        if k not in ("w_gate", "w_up", "w_down")
    }
    out["router"] = lay((D, "embed"), (E, None))
    if cfg.router == "sigmoid":  # the balancing bias: non-gradient state (moe.update_router_bias)
        out["router_bias"] = lay((E, None), init="zeros")
    out["we_gate"] = lay((E, "expert"), (D, "embed"), (Fe, "mlp"))
    out["we_up"] = lay((E, "expert"), (D, "embed"), (Fe, "mlp"))
    out["we_down"] = lay((E, "expert"), (Fe, "mlp"), (D, "embed"))
    if cfg.n_shared_experts:
        Fs = cfg.n_shared_experts * Fe
        out["ws_gate"] = lay((D, "embed"), (Fs, "mlp"))
        out["ws_up"] = lay((D, "embed"), (Fs, "mlp"))
        out["ws_down"] = lay((Fs, "mlp"), (D, "embed"))
    return out


def count_active_params(cfg: ModelConfig) -> int:
    """Parameters one token uses: all but the routed experts it was not sent to."""
    total = count_params(cfg)
    if not cfg.n_experts:
        return total
    per_expert = 3 * cfg.d_model * cfg.moe_d_ff * (cfg.n_layers - cfg.first_k_dense)
    return total - per_expert * (cfg.n_experts - cfg.n_experts_per_tok)


def _is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def abstract_params(cfg: ModelConfig) -> Params:
    dtype = jnp.dtype(cfg.param_dtype)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, dtype), param_specs(cfg), is_leaf=_is_spec
    )


def param_shardings(cfg: ModelConfig, mesh) -> Params:
    return jax.tree.map(
        lambda s: shd.named_sharding(s.axes, s.shape, mesh), param_specs(cfg), is_leaf=_is_spec
    )


def count_params(cfg: ModelConfig) -> int:
    """Parameter count from the declarations alone; nothing is allocated."""
    leaves = jax.tree.leaves(param_specs(cfg), is_leaf=_is_spec)
    return sum(math.prod(s.shape) for s in leaves)


def init_params(cfg: ModelConfig, key: jax.Array, mesh=None) -> Params:
    """Random parameters, created directly in their target shardings (never on one device)."""
    specs = param_specs(cfg)
    leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
    dtype = jnp.dtype(cfg.param_dtype)

    def init(key):
        keys = jax.random.split(key, len(leaves))
        out = []
        for k, s in zip(keys, leaves):
            if s.init == "normal":
                out.append((cfg.init_std * jax.random.normal(k, s.shape, f32)).astype(dtype))
            else:
                out.append(jnp.full(s.shape, 1.0 if s.init == "ones" else 0.0, dtype))
        return jax.tree.unflatten(treedef, out)

    mesh = mesh or shd.make_mesh((("fsdp", 1),), jax.devices()[:1])
    return jax.jit(init, out_shardings=param_shardings(cfg, mesh))(key)


# ----------------------------------------------------------------------------------------------
# Building blocks


def rms_norm(x, w, eps: float):
    x32 = x.astype(f32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * w.astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies [Dh/2], with Llama-3 frequency-dependent scaling when configured."""
    dh = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dh, 2, dtype=np.float64) / dh))
    if cfg.rope_llama3:
        factor, low, high, orig = cfg.rope_llama3
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > orig / low, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        mid = (wavelen >= orig / high) & (wavelen <= orig / low)
        inv = np.where(mid, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    return inv.astype(np.float32)


def apply_rope(x_NTHh, positions_NT, inv_freq):
    """Rotates the two halves of each head (the Hugging Face "rotate_half" layout)."""
    freqs = positions_NT[..., None].astype(f32) * inv_freq  # [N,T,h/2]
    cos, sin = jnp.cos(freqs)[:, :, None], jnp.sin(freqs)[:, :, None]
    x1, x2 = jnp.split(x_NTHh.astype(f32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_NTHh.dtype)


def _dense(x, w_AB):
    """x [..., A] @ w [A, B] as one 2-D matmul over the flattened leading axes.

    XLA CPU lays out the weight gradient of the equivalent 3-d einsum ("ntd,df->ntf") as a
    transpose of the [n*t, f] cotangent fused with its elementwise producers, which ran ~10x
    slower than the matmuls themselves; in 2-D it transposes nothing large. The GRPO update of a
    4-layer D=256 model went from 2.9 s to 1.4 s (benchmarks/grpo_step.py).
    """
    return (x.reshape(-1, x.shape[-1]) @ w_AB).reshape(*x.shape[:-1], w_AB.shape[-1])


def _qkv(x_NTD, lp, positions_NT, cfg: ModelConfig):
    dt = jnp.dtype(cfg.dtype)
    h = rms_norm(x_NTD, lp["attn_norm"], cfg.rms_eps)
    n, t, d = h.shape
    q, k, v = (
        _dense(h, lp[w].astype(dt).reshape(d, -1)).reshape(n, t, -1, cfg.head_dim)
        for w in ("wq", "wk", "wv")
    )
    if cfg.qkv_bias:
        q, k, v = q + lp["bq"].astype(dt), k + lp["bk"].astype(dt), v + lp["bv"].astype(dt)
    if cfg.qk_norm:
        q, k = rms_norm(q, lp["q_norm"], cfg.rms_eps), rms_norm(k, lp["k_norm"], cfg.rms_eps)
    inv = rope_inv_freq(cfg)
    return apply_rope(q, positions_NT, inv), apply_rope(k, positions_NT, inv), v


@functools.partial(
    jax.checkpoint,
    policy=jax.checkpoint_policies.save_only_these_names("mlp_gate_up"),
    prevent_cse=False,  # layers run under lax.scan: no CSE across the forward and backward
    static_argnums=(2,),
)
def _mlp(x_NTD, lp, cfg: ModelConfig):
    """x + SwiGLU(norm(x)). For the backward pass only the gate and up projections are kept;
    the rest (the norm, silu(gate) * up) is elementwise and recomputed. Not writing and re-reading
    two more [N,T,F] tensors per layer made the GRPO update ~10% faster on CPU."""
    dt = jnp.dtype(cfg.dtype)
    h = rms_norm(x_NTD, lp["mlp_norm"], cfg.rms_eps)
    gate = checkpoint_name(_dense(h, lp["w_gate"].astype(dt)), "mlp_gate_up")
    up = checkpoint_name(_dense(h, lp["w_up"].astype(dt)), "mlp_gate_up")
    return x_NTD + _dense(jax.nn.silu(gate) * up, lp["w_down"].astype(dt))


def _finish_block(x_NTD, o_NTHh, lp, cfg: ModelConfig, valid_NT=None, replay_NTK=None):
    """x + out-projection, then the MLP (dense, or MoE in a "moe_layers" layer). Returns x, or
    (x, routing) for a MoE layer (moe.moe_ffn's experts and router metric sums)."""
    dt = jnp.dtype(cfg.dtype)
    n, t, H, dh = o_NTHh.shape
    wo = lp["wo"].astype(dt).reshape(H * dh, -1)
    x = x_NTD + _dense(o_NTHh.reshape(n, t, H * dh), wo)
    if "router" not in lp:
        return _mlp(x, lp, cfg)
    h = rms_norm(x, lp["mlp_norm"], cfg.rms_eps)
    y, routing = moe.moe_ffn(h, lp, cfg, valid_NT, replay_NTK)
    return x + y, routing


def _attention_dims(cfg: ModelConfig) -> tuple[int, int]:
    """(query/key head size, value head size): MLA's keys carry the decoupled RoPE part."""
    if cfg.kv_lora_rank:
        return cfg.head_dim + cfg.qk_rope_dim, cfg.v_head_dim
    return cfg.head_dim, cfg.head_dim


def _attend(x_NTD, lp, positions_NT, attend, cfg: ModelConfig):
    """Attention of one layer over full sequences: (o [N,T,H,Dv], this layer's cache entries:
    (k, v) [N,T,K,Dh] each, or the MLA latent and RoPE key [N,T,r+p])."""
    if cfg.kv_lora_rank:
        h = rms_norm(x_NTD, lp["attn_norm"], cfg.rms_eps)
        return mla.full_attention(h, lp, positions_NT, attend, cfg, (rms_norm, apply_rope))
    q, k, v = _qkv(x_NTD, lp, positions_NT, cfg)
    return attend(q, k, v), (k, v)


def _scan_layers(layer, x, params: Params, xs=None):
    """Runs `layer(x, (lp, xs_i)) -> (x, y)` over the dense stack, then the MoE stack if any.
    Returns x and each stack's stacked outputs (None for a missing stack)."""
    stacks = [params["layers"]] + ([params["moe_layers"]] if "moe_layers" in params else [])
    outs, start = [], 0
    for lps in stacks:
        n = jax.tree.leaves(lps)[0].shape[0]
        xs_i = None if xs is None else jax.tree.map(lambda a, s=start, n=n: a[s : s + n], xs)
        x, ys = jax.lax.scan(layer, x, (lps, xs_i))
        outs.append(ys)
        start += n
    return x, outs + [None] * (2 - len(outs))


def attention_mask(segment_ids_NT):
    """Causal, within one segment, and never onto padding (segment id 0)."""
    return attn_lib.dense_mask(segment_ids_NT, segment_ids_NT)


def positions_from_mask(mask_NT):
    """Per-row positions for left- or right-padded rows: 0 at the first real token."""
    return jnp.maximum(jnp.cumsum(mask_NT.astype(jnp.int32), axis=1) - 1, 0)


# ----------------------------------------------------------------------------------------------
# Full-sequence forward


def embed(params, tokens, cfg: ModelConfig):
    return params["embed"][tokens].astype(cfg.dtype)


def forward(
    params: Params,
    tokens_NT,
    positions_NT,
    segment_ids_NT,
    cfg: ModelConfig,
    return_kv: bool = False,
    return_routing: bool = False,
    replay=None,
):
    """Hidden states after the final norm, [N,T,D]; with return_kv also (k, v) [L,N,T,K,Dh]
    (MLA: the latent cache [L,N,T,r+p]); with return_routing also the MoE layers' routing
    (moe.moe_ffn's dict stacked over them, [L_moe, ...]).

    segment_ids_NT: 0 marks padding; rows may hold several packed segments (1, 2, ...).
    replay: expert choices [L_moe,N,T,k] to route with (routing replay; moe.moe_ffn).
    The attention path (dense, blocked, cuDNN, splash) is chosen by cfg.attention and the length.
    """
    attend = attn_lib.self_attention(segment_ids_NT, cfg, *_attention_dims(cfg))
    valid = segment_ids_NT != 0

    def layer(x, lp_replay):
        lp, rep = lp_replay
        o, kv = _attend(x, lp, positions_NT, attend, cfg)
        x = _finish_block(x, o, lp, cfg, valid, rep)
        x, routing = x if isinstance(x, tuple) else (x, None)
        return x, ((kv if return_kv else None), routing)

    if cfg.remat:
        layer = jax.checkpoint(layer, prevent_cse=False)
    xs = (
        None
        if replay is None
        else jnp.concatenate(  # dense layers get dummy entries
            [jnp.zeros((cfg.first_k_dense,) + replay.shape[1:], replay.dtype), replay]
        )
    )
    x, (dense, sparse) = _scan_layers(layer, embed(params, tokens_NT, cfg), params, xs)
    h = rms_norm(x, params["final_norm"], cfg.rms_eps)
    out = [h]
    if return_kv:
        out.append(dense[0] if sparse is None else jax.tree.map(_cat, dense[0], sparse[0]))
    if return_routing:
        out.append(None if sparse is None else sparse[1])
    return tuple(out) if len(out) > 1 else h


def _cat(a, b):
    return jnp.concatenate([a, b], axis=0)


def unembed_matrix(params: Params, cfg: ModelConfig):
    return params["embed"] if cfg.tie_embeddings else params["lm_head"]  # [V, D]


def logits_from_hidden(params: Params, h_ND, cfg: ModelConfig):
    w = unembed_matrix(params, cfg).astype(cfg.dtype)
    return jnp.einsum("...d,vd->...v", h_ND, w, preferred_element_type=f32)


def logits(params: Params, tokens_NT, mask_NT, cfg: ModelConfig):
    """Logits [N,T,V] for (possibly left-padded) rows; for tests and small models."""
    h = forward(params, tokens_NT, positions_from_mask(mask_NT), mask_NT.astype(jnp.int32), cfg)
    return logits_from_hidden(params, h, cfg)


def target_logprobs(
    params: Params,
    tokens_NS,
    positions_NS,
    segment_ids_NS,
    cfg: ModelConfig,
    *,
    first: int = 1,
    temperature: float = 1.0,
    vocab_chunk: int = 8192,
    with_entropy: bool = False,
    replay=None,
    return_routing: bool = False,
):
    """log p(tokens[:, s] | tokens[:, :s]) for s >= first: [N, S - first] (and the entropy).
    MoE: `replay` routes with given expert choices; return_routing appends the routing dict.

    The one log-prob function of training: GRPO's policy, reference and old-policy log-probs of
    completions (first = the prompt length) and the next-token terms of SFT and distillation on
    packed rows (first = 1) all come from here, so sampler and trainer agree by construction.
    """
    h = forward(params, tokens_NS, positions_NS, segment_ids_NS, cfg, False, True, replay)
    h, routing = h if isinstance(h, tuple) else (h, None)
    # The hidden state at position s-1 predicts token s.
    out = token_logprobs(
        params,
        h[:, first - 1 : -1],
        tokens_NS[:, first:],
        cfg,
        temperature=temperature,
        vocab_chunk=vocab_chunk,
        with_entropy=with_entropy,
    )
    return (*out, routing) if return_routing else out


def token_logprobs(
    params: Params,
    h_NTD,
    targets_NT,
    cfg: ModelConfig,
    *,
    temperature: float = 1.0,
    vocab_chunk: int = 8192,
    with_entropy: bool = False,
):
    """log softmax(logits / temperature)[target] in fp32, and optionally the entropy.

    Over vocabulary chunks with an online logsumexp, each chunk rematerialised in the backward
    pass, so memory is O(N*T*chunk) instead of O(N*T*V).
    """
    w_VD = unembed_matrix(params, cfg).astype(cfg.dtype)
    V = w_VD.shape[0]
    if V <= vocab_chunk:
        z = jnp.einsum("ntd,vd->ntv", h_NTD, w_VD, preferred_element_type=f32) / temperature
        logz = jax.nn.logsumexp(z, axis=-1)
        logp = jnp.take_along_axis(z, targets_NT[..., None], axis=-1)[..., 0] - logz
        if not with_entropy:
            return logp, None
        return logp, logz - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)

    n_chunks = -(-V // vocab_chunk)
    w = jnp.pad(w_VD, ((0, n_chunks * vocab_chunk - V), (0, 0)))
    w = w.reshape(n_chunks, vocab_chunk, -1)

    @jax.checkpoint
    def step(carry, xs):
        m, s, zs, tgt = carry
        w_c, c = xs
        cols = c * vocab_chunk + jnp.arange(vocab_chunk)
        z = jnp.einsum("ntd,vd->ntv", h_NTD, w_c, preferred_element_type=f32) / temperature
        z = jnp.where(cols < V, z, NEG_INF)
        m_new = jnp.maximum(m, z.max(-1))
        e = jnp.exp(z - m_new[..., None])
        scale = jnp.exp(m - m_new)
        s = s * scale + e.sum(-1)
        zs = zs * scale + (e * z).sum(-1) if with_entropy else zs
        tgt = tgt + jnp.sum(jnp.where(cols == targets_NT[..., None], z, 0.0), axis=-1)
        return (m_new, s, zs, tgt), None

    zeros = jnp.zeros(targets_NT.shape, f32)
    init = (jnp.full(targets_NT.shape, NEG_INF, f32), zeros, zeros, zeros)
    (m, s, zs, tgt), _ = jax.lax.scan(step, init, (w, jnp.arange(n_chunks)))
    logz = m + jnp.log(s)
    return tgt - logz, (logz - zs / s) if with_entropy else None


# ----------------------------------------------------------------------------------------------
# KV cache: a shared prefix per prompt plus a suffix per row


def prefill(params: Params, tokens_BP, mask_BP, cfg: ModelConfig):
    """Runs left-padded prompts once. Returns the last hidden state [B,D] and the prefix cache:
    k as [L,B,K,Dh,P] and v as [L,B,K,P,Dh], the layouts the decode matmuls read directly."""
    positions = positions_from_mask(mask_BP)
    h, kv = forward(params, tokens_BP, positions, mask_BP.astype(jnp.int32), cfg, True)
    prefix = {"mask": mask_BP.astype(bool), "length": mask_BP.sum(1)}
    if cfg.kv_lora_rank:  # MLA: the latent and RoPE key [L,B,P,r+p], shared by the group
        return h[:, -1], {**prefix, "kv": kv}
    k, v = kv
    prefix.update(k=k.transpose(0, 1, 3, 4, 2), v=v.transpose(0, 1, 3, 2, 4))
    return h[:, -1], prefix


def prefill_chunked(params: Params, tokens_BP, mask_BP, cfg: ModelConfig, chunk: int):
    """prefill, `chunk` positions at a time: each chunk's queries attend to the K/V written so
    far (attention.chunk_attention, queries at an offset), so activations are [B, chunk, ...]
    instead of [B, P, ...]; only the cache grows with P. Same outputs as prefill, up to float
    rounding, at the real (mask 1) positions. P need not be a multiple of chunk: the prompts get
    more left padding, cut off again. Padding positions' K/V (never read) differ from prefill's.
    MLA: the cache is the latent [c ; k_r], and a chunk attends to it in the absorbed form
    (mla.absorbed_attention), so no per-head K/V of the whole prompt is formed. Capacity-limited
    MoE is refused (check_prefill_chunk)."""
    check_prefill_chunk(cfg, chunk)
    B, P = tokens_BP.shape
    n = -(-P // chunk)
    extra = n * chunk - P
    tokens = jnp.pad(tokens_BP, ((0, 0), (extra, 0)))
    seg = jnp.pad(mask_BP.astype(jnp.int32), ((0, 0), (extra, 0)))
    pos = positions_from_mask(seg)
    L, Pc = cfg.n_layers, n * chunk
    if cfg.kv_lora_rank:  # one shared kv head: keys [c ; k_r], values c
        C, R = cfg.kv_lora_rank + cfg.qk_rope_dim, cfg.kv_lora_rank
        cache, dims, scale = (jnp.zeros((L, B, Pc, C), cfg.dtype),), (C, R), mla.rope(cfg)[2]
    else:
        shape = (L, B, Pc, cfg.n_kv_heads, cfg.head_dim)
        cache, dims, scale = (jnp.zeros(shape, cfg.dtype),) * 2, _attention_dims(cfg), None

    def one_chunk(cache, c):
        start = c * chunk
        part = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk, axis=1)  # noqa: E731
        seg_c = part(seg)
        attend = attn_lib.chunk_attention(seg_c, seg, start, cfg, *dims, scale)

        def layer(carry, xs):  # the stacked cache is a carry, so it is written in place
            x, cache = carry
            lp, li = xs

            def write(a, x):  # this chunk's entries of layer li
                at = (li, 0, start) + (0,) * (x.ndim - 2)
                return jax.lax.dynamic_update_slice(a, x[None].astype(a.dtype), at)

            if cfg.kv_lora_rank:
                h = rms_norm(x, lp["attn_norm"], cfg.rms_eps)
                q_nope, q_rope, lat, k_rope = mla.project(
                    h, lp, part(pos), cfg, rms_norm, apply_rope
                )
                cache = (write(cache[0], jnp.concatenate([lat, k_rope], -1)),)
                o = mla.absorbed_attention(q_nope, q_rope, lp, cache[0][li], attend, cfg)
            else:
                q, k, v = _qkv(x, lp, part(pos), cfg)
                cache = (write(cache[0], k), write(cache[1], v))
                o = attend(q, cache[0][li], cache[1][li])
            x = _finish_block(x, o, lp, cfg, seg_c != 0)
            return ((x[0] if isinstance(x, tuple) else x), cache), None

        x = embed(params, part(tokens), cfg)
        (x, cache), _ = _scan_layers(layer, (x, cache), params, jnp.arange(L))
        return cache, x[:, -1]

    cache, h_last = jax.lax.scan(one_chunk, cache, jnp.arange(n))
    h = rms_norm(h_last[-1], params["final_norm"], cfg.rms_eps)
    prefix = {"mask": mask_BP.astype(bool), "length": mask_BP.sum(1)}
    if cfg.kv_lora_rank:
        return h, {**prefix, "kv": cache[0][:, :, extra:]}
    k, v = cache[0][:, :, extra:], cache[1][:, :, extra:]
    return h, {**prefix, "k": k.transpose(0, 1, 3, 4, 2), "v": v.transpose(0, 1, 3, 2, 4)}


def check_prefill_chunk(cfg: ModelConfig, chunk: int) -> None:
    """A one-line error for the models chunked prefill does not cover."""
    if chunk and cfg.n_experts and cfg.capacity_factor:
        # An expert's capacity counts the tokens of one forward: a chunk would drop others.
        raise ValueError(
            "sampling.prefill_chunk needs dropless MoE (capacity_factor 0); set it to 0"
        )


def init_suffix(cfg: ModelConfig, n: int, max_len: int, dtype=None) -> dict:
    """An empty per-row cache for max_len generated tokens; rows advance in lockstep.

    k is stored transposed, [L,N,K,Dh,S], and v as [L,N,K,S,Dh]: then q.k and p.v are plain
    batched matmuls over (row, kv head). With [L,N,S,K,Dh] XLA CPU re-laid out (copied) each
    layer's whole cache on every step, which cost more than the attention itself.
    """
    L, K, Dh = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
    dtype = dtype or cfg.dtype
    if cfg.unroll_decode and (cfg.kv_lora_rank or cfg.n_experts):
        raise ValueError("ModelConfig.unroll_decode is not supported with MLA or MoE layers")
    if cfg.kv_lora_rank:  # MLA: kv_lora_rank + qk_rope_dim values per token and layer
        shape = (L, n, max_len, cfg.kv_lora_rank + cfg.qk_rope_dim)
        return {"kv": jnp.zeros(shape, dtype), "index": jnp.zeros((), jnp.int32)}
    if cfg.unroll_decode:  # per-layer lists: see unstack_layers
        k = [jnp.zeros((n, K, Dh, max_len), dtype) for _ in range(L)]
        v = [jnp.zeros((n, K, max_len, Dh), dtype) for _ in range(L)]
    else:
        k, v = jnp.zeros((L, n, K, Dh, max_len), dtype), jnp.zeros((L, n, K, max_len, Dh), dtype)
    return {"k": k, "v": v, "index": jnp.zeros((), jnp.int32)}


def _decode_attention(q_NHh, prefix_k, prefix_v, prefix_mask, k_NKhS, v_NKSh, valid_S):
    """One query per row over [its prompt's prefix ; its own suffix], one joint softmax.

    prefix_k [B,K,Dh,P], prefix_v [B,K,P,Dh]; k_NKhS [N,K,Dh,S], v_NKSh [N,K,S,Dh].
    """
    n, H, dh = q_NHh.shape
    b, K = prefix_k.shape[:2]
    g, r = n // b, H // K
    q = (q_NHh / math.sqrt(dh)).astype(q_NHh.dtype).reshape(b, g, K, r, dh)
    # (b, k) batch axes first in the output: XLA:CPU has no bf16 x bf16 -> fp32 dot for the
    # "bgkrp" order ("Unsupported element type for DotThunk"); the fp32 result is bit-identical.
    s_pre = jnp.einsum("bgkrh,bkhp->bkgrp", q, prefix_k, preferred_element_type=f32)
    s_pre = s_pre.transpose(0, 2, 1, 3, 4)
    s_pre = jnp.where(prefix_mask[:, None, None, None], s_pre, NEG_INF)
    s_own = jnp.einsum(
        "nkrh,nkhs->nkrs", q.reshape(n, K, r, dh), k_NKhS, preferred_element_type=f32
    )
    s_own = jnp.where(valid_S, s_own, NEG_INF).reshape(b, g, K, r, -1)
    p = jax.nn.softmax(jnp.concatenate([s_pre, s_own], -1), axis=-1)
    p_pre, p_own = jnp.split(p.astype(prefix_v.dtype), [prefix_k.shape[-1]], axis=-1)
    o = jnp.einsum("bgkrp,bkph->bgkrh", p_pre, prefix_v).reshape(n, K, r, dh)
    o = o + jnp.einsum("nkrs,nksh->nkrh", p_own.reshape(n, K, r, -1), v_NKSh)
    return o.reshape(n, 1, H, dh)


def unstack_layers(params: Params, prefix: dict | None = None) -> tuple[Params, dict | None]:
    """Per-layer lists of the stacked layer weights and prefix cache (if given), for an unrolled
    decode.

    Sliced once per generation: inside the decode loop, scanning over the stack would copy each
    layer's weights and cache out of it on every step (XLA CPU does not read a dynamic slice in
    place). The suffix cache is made per layer by init_suffix when cfg.unroll_decode is set.
    """
    L = jax.tree.leaves(params["layers"])[0].shape[0]
    layers = [jax.tree.map(lambda a, i=i: a[i], params["layers"]) for i in range(L)]
    return {**params, "layers": layers}, None if prefix is None else unstack_prefix(prefix)


def unstack_prefix(prefix: dict) -> dict:
    """The prefix cache's stacked k, v as per-layer lists (unstack_layers)."""
    return {**prefix, "k": list(prefix["k"]), "v": list(prefix["v"])}


def decode_step(
    params: Params, tokens_N, positions_N, prefix: dict, suffix: dict, cfg: ModelConfig
):
    """Appends one token per row. Returns the hidden state [N,D] and the updated suffix.

    Row n belongs to prompt n // G, where G = N / B is inferred from the shapes. Weights and
    caches are either stacked over layers (run under lax.scan) or, with cfg.unroll_decode, lists
    of per-layer arrays (see unstack_layers and init_suffix), run as straight-line code.
    """
    idx = suffix["index"]
    if cfg.kv_lora_rank:
        return _decode_step_mla(params, tokens_N, positions_N, prefix, suffix, cfg)
    v0 = suffix["v"][0] if isinstance(suffix["v"], list) else suffix["v"]
    valid_S = jnp.arange(v0.shape[-2]) <= idx
    pos = positions_N[:, None]

    def new_kv(x, lp):  # q, and this token's k column [N,K,Dh,1] and v row [N,K,1,Dh]
        q, k, v = _qkv(x, lp, pos, cfg)
        return q, k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)

    def attend(x, q, lp, pk, pv, ck, cv):  # ck [N,K,Dh,S], cv [N,K,S,Dh]: this layer's suffix
        o = _decode_attention(q[:, 0], pk, pv, prefix["mask"], ck, cv, valid_S)
        x = _finish_block(x, o, lp, cfg)
        return x[0] if isinstance(x, tuple) else x  # a MoE layer also returns its routing

    # One column of the cache is written in place, not the whole cache.
    x = embed(params, tokens_N[:, None], cfg)
    if isinstance(params["layers"], list):
        ck, cv = list(suffix["k"]), list(suffix["v"])
        for i, lp in enumerate(params["layers"]):
            q, k_col, v_row = new_kv(x, lp)
            ck[i] = jax.lax.dynamic_update_slice(ck[i], k_col.astype(ck[i].dtype), (0, 0, 0, idx))
            cv[i] = jax.lax.dynamic_update_slice(cv[i], v_row.astype(cv[i].dtype), (0, 0, idx, 0))
            x = attend(x, q, lp, prefix["k"][i], prefix["v"][i], ck[i], cv[i])
    else:

        def layer(carry, xs):
            x, ck, cv = carry
            lp, (li, pk, pv) = xs
            q, k_col, v_row = new_kv(x, lp)
            ck = jax.lax.dynamic_update_slice(ck, k_col[None].astype(ck.dtype), (li, 0, 0, 0, idx))
            cv = jax.lax.dynamic_update_slice(cv, v_row[None].astype(cv.dtype), (li, 0, 0, idx, 0))
            return (attend(x, q, lp, pk, pv, ck[li], cv[li]), ck, cv), None

        xs = (jnp.arange(cfg.n_layers), prefix["k"], prefix["v"])
        (x, ck, cv), _ = _scan_layers(layer, (x, suffix["k"], suffix["v"]), params, xs)
    h = rms_norm(x[:, 0], params["final_norm"], cfg.rms_eps)
    return h, {"k": ck, "v": cv, "index": idx + 1}


def _decode_step_mla(params, tokens_N, positions_N, prefix, suffix, cfg: ModelConfig):
    """decode_step for MLA: each layer writes this token's [latent ; RoPE key] into the suffix
    cache [L,N,S,r+p] and attends in the absorbed form (mla.decode_attention)."""
    idx = suffix["index"]
    valid_S = jnp.arange(suffix["kv"].shape[2]) <= idx

    def layer(carry, xs):
        x, cache = carry
        lp, (li, pre) = xs
        h = rms_norm(x, lp["attn_norm"], cfg.rms_eps)
        q_nope, q_rope, latent, k_rope = mla.project(
            h, lp, positions_N[:, None], cfg, rms_norm, apply_rope
        )
        entry = jnp.concatenate([latent, k_rope], -1)[None].astype(cache.dtype)  # [1,N,1,C]
        cache = jax.lax.dynamic_update_slice(cache, entry, (li, 0, idx, 0))
        o = mla.decode_attention(
            q_nope[:, 0], q_rope[:, 0], lp, pre, prefix["mask"], cache[li], valid_S, cfg
        )
        x = _finish_block(x, o[:, None], lp, cfg)
        return ((x[0] if isinstance(x, tuple) else x), cache), None

    x = embed(params, tokens_N[:, None], cfg)
    xs = (jnp.arange(cfg.n_layers), prefix["kv"])
    (x, cache), _ = _scan_layers(layer, (x, suffix["kv"]), params, xs)
    h = rms_norm(x[:, 0], params["final_norm"], cfg.rms_eps)
    return h, {"kv": cache, "index": idx + 1}
