"""Multi-head latent attention (DeepSeek-V2/V3): a low-rank compressed KV with a decoupled RoPE key.

Per token, x is projected down to a latent c (kv_lora_rank, RMS-normed) and one RoPE key k_r
(qk_rope_dim, shared by all heads). Per head, the key is [W_uk c ; k_r] and the value W_uv c
(W_uk, W_uv: the two halves of wkv_b). The query is [q_nope ; RoPE(q_r)], from x directly or
through its own low-rank bottleneck (q_lora_rank, RMS-normed).

Two equivalent forms:
  expanded  (training, prefill): K and V per head are materialised, then ordinary attention.
  absorbed  (decoding, chunked prefill): W_uk is folded into the query (q_lat = W_uk^T q_nope)
            and W_uv applied after the weighted sum of latents, so the cache holds only
            [c ; k_r]: kv_lora_rank + qk_rope_dim values per token and layer, not
            2 * H * head_dim.

Einsum letters: n rows, t query / s key positions, h heads, r latent (kv_lora_rank),
c the query latent (q_lora_rank), e nope dim, p rope dim, v value dim, d model.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models.config import ModelConfig

f32 = jnp.float32


def specs(cfg: ModelConfig) -> dict:
    """{name: (shape-with-axes, init)} of one layer's attention parameters (no layer axis)."""
    D, H, R, Dn, Dr, Dv = (
        cfg.d_model,
        cfg.n_heads,
        cfg.kv_lora_rank,
        cfg.head_dim,
        cfg.qk_rope_dim,
        cfg.v_head_dim,
    )
    out = {
        "wkv_a": (((D, "embed"), (R + Dr, "lora")), "normal"),
        "kv_a_norm": (((R, "norm"),), "ones"),
        "wkv_b": (((R, "lora"), (H, "q_heads"), (Dn + Dv, "head_dim")), "normal"),
        "wo": (((H, "q_heads"), (Dv, "head_dim"), (D, "embed")), "normal"),
    }
    if cfg.q_lora_rank:
        out["wq_a"] = (((D, "embed"), (cfg.q_lora_rank, "lora")), "normal")
        out["q_a_norm"] = (((cfg.q_lora_rank, "norm"),), "ones")
        out["wq_b"] = (((cfg.q_lora_rank, "lora"), (H, "q_heads"), (Dn + Dr, "head_dim")), "normal")
    else:
        out["wq"] = (((D, "embed"), (H, "q_heads"), (Dn + Dr, "head_dim")), "normal")
    return out


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope(cfg: ModelConfig) -> tuple[np.ndarray, float, float]:
    """(inv_freq [Dr/2], rope amplitude, softmax scale). With YaRN: frequencies interpolated
    outside the [beta_slow, beta_fast] rotation band, the rotated parts multiplied by
    mscale(factor, mscale) / mscale(factor, mscale_all_dim), and the softmax scale by
    mscale(factor, mscale_all_dim)^2 (as the DeepSeek-V3 config and transformers do)."""
    dim = cfg.qk_rope_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    scale = 1.0 / math.sqrt(cfg.head_dim + dim)
    if not cfg.rope_yarn:
        return inv.astype(np.float32), 1.0, scale
    factor, orig, beta_fast, beta_slow, mscale, mscale_all = cfg.rope_yarn

    def corr(rot):  # the dimension whose wavelength makes `rot` turns over `orig` positions
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))

    low, high = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), dim - 1)
    high = high + 0.001 if low == high else high
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrap = 1 - ramp  # 1: keep the original frequency (high frequencies)
    inv = inv / factor * (1 - extrap) + inv * extrap
    if mscale and mscale_all:
        amp = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all)
    else:
        amp = yarn_get_mscale(factor)
    if mscale_all:
        scale *= yarn_get_mscale(factor, mscale_all) ** 2
    return inv.astype(np.float32), amp, scale


def project(h_NTD, lp, positions_NT, cfg: ModelConfig, rms_norm, apply_rope):
    """From the normed input: q_nope [N,T,H,e], q_rope [N,T,H,p], latent [N,T,r], k_rope [N,T,p]
    (RoPE applied, and the YaRN amplitude)."""
    dt = jnp.dtype(cfg.dtype)
    n, t, _ = h_NTD.shape
    if cfg.q_lora_rank:
        cq = rms_norm(h_NTD @ lp["wq_a"].astype(dt), lp["q_a_norm"], cfg.rms_eps)
        q = jnp.einsum("ntc,che->nthe", cq, lp["wq_b"].astype(dt))
    else:
        q = jnp.einsum("ntd,dhe->nthe", h_NTD, lp["wq"].astype(dt))
    q_nope, q_rope = jnp.split(q, [cfg.head_dim], axis=-1)
    kv = h_NTD @ lp["wkv_a"].astype(dt)
    latent = rms_norm(kv[..., : cfg.kv_lora_rank], lp["kv_a_norm"], cfg.rms_eps)
    inv, amp, _ = rope(cfg)
    q_rope = apply_rope(q_rope, positions_NT, inv) * amp
    k_rope = apply_rope(kv[..., None, cfg.kv_lora_rank :], positions_NT, inv)[:, :, 0] * amp
    return q_nope, q_rope.astype(dt), latent, k_rope.astype(dt)


def expand(latent_NSR, k_rope_NSP, lp, cfg: ModelConfig):
    """Per-head keys [N,S,H,e+p] and values [N,S,H,v] from the latent and the RoPE key."""
    kv = jnp.einsum("nsr,rhe->nshe", latent_NSR, lp["wkv_b"].astype(latent_NSR.dtype))
    k_nope, v = jnp.split(kv, [cfg.head_dim], axis=-1)
    k_rope = jnp.broadcast_to(k_rope_NSP[:, :, None], k_nope.shape[:3] + k_rope_NSP.shape[-1:])
    return jnp.concatenate([k_nope, k_rope], axis=-1), v


def full_attention(h_NTD, lp, positions_NT, attend, cfg: ModelConfig, blocks):
    """Expanded-form MLA over full sequences: (o [N,T,H,v], cache [N,T,r+p]). `attend`: the
    model's attention path (models/attention.py, value size != key size), so masking and the
    fp32 softmax are the same code as for standard attention; `blocks`: the transformer's
    (rms_norm, apply_rope)."""
    rms_norm, apply_rope = blocks
    q_nope, q_rope, latent, k_rope = project(h_NTD, lp, positions_NT, cfg, rms_norm, apply_rope)
    k, v = expand(latent, k_rope, lp, cfg)
    # attention divides by sqrt(e+p); the model's own scale (YaRN mscale) is folded into q.
    q = jnp.concatenate([q_nope, q_rope], -1) * (rope(cfg)[2] * math.sqrt(k.shape[-1]))
    o = attend(q.astype(k.dtype), k, v)
    return o, jnp.concatenate([latent, k_rope], axis=-1)


def decode_attention(
    q_nope_NHE, q_rope_NHP, lp, prefix_BPC, prefix_mask_BP, suffix_NSC, valid_S, cfg
):
    """One query per row (from `project`), absorbed form, against its prompt's shared prefix
    cache [B,P,r+p] and its own suffix cache [N,S,r+p] (this token's entry written): o [N,H,v].

    The scores are [W_uk^T q_nope ; q_rope] . [c ; k_r], the output W_uv (sum_s p_s c_s): the
    whole computation stays in the latent space and no per-head key or value is formed."""
    R, E = cfg.kv_lora_rank, cfg.head_dim
    dt = suffix_NSC.dtype
    w = lp["wkv_b"].astype(dt)
    q_lat = jnp.einsum("nhe,rhe->nhr", q_nope_NHE.astype(dt), w[..., :E])
    qc = jnp.concatenate([q_lat, q_rope_NHP.astype(dt)], -1) * rope(cfg)[2]  # [N,H,r+p]
    n, H, C = qc.shape
    b = prefix_BPC.shape[0]
    s_pre = jnp.einsum(
        "bghc,bpc->bghp", qc.reshape(b, n // b, H, C), prefix_BPC, preferred_element_type=f32
    )
    s_pre = jnp.where(prefix_mask_BP[:, None, None], s_pre, -1e30).reshape(n, H, -1)
    s_own = jnp.einsum("nhc,nsc->nhs", qc, suffix_NSC, preferred_element_type=f32)
    s_own = jnp.where(valid_S, s_own, -1e30)
    p = jax.nn.softmax(jnp.concatenate([s_pre, s_own], -1), axis=-1).astype(dt)
    p_pre, p_own = jnp.split(p, [prefix_BPC.shape[1]], axis=-1)
    o_lat = jnp.einsum("bghp,bpr->bghr", p_pre.reshape(b, n // b, H, -1), prefix_BPC[..., :R])
    o_lat = o_lat.reshape(n, H, R) + jnp.einsum("nhs,nsr->nhr", p_own, suffix_NSC[..., :R])
    return jnp.einsum("nhr,rhv->nhv", o_lat, w[..., E:])


def absorbed_attention(q_nope_NTHE, q_rope_NTHP, lp, cache_NSC, attend, cfg):
    """T queries (from `project`) against a latent cache [N,S,r+p] in the absorbed form, through
    the model's attention path (`attend`, scale = rope(cfg)[2], models/attention.py) as one kv
    head shared by all H heads: keys [c ; k_r], values c. Prefill in chunks uses it: the
    attention over a long prompt never forms its per-head keys and values. o [N,T,H,v]."""
    R, E = cfg.kv_lora_rank, cfg.head_dim
    dt = cache_NSC.dtype
    w = lp["wkv_b"].astype(dt)
    q_lat = jnp.einsum("nthe,rhe->nthr", q_nope_NTHE.astype(dt), w[..., :E])
    q = jnp.concatenate([q_lat, q_rope_NTHP.astype(dt)], -1)  # [N,T,H,r+p]
    o_lat = attend(q, cache_NSC[:, :, None], cache_NSC[:, :, None, :R])  # [N,T,H,r]
    return jnp.einsum("nthr,rhv->nthv", o_lat, w[..., E:])
