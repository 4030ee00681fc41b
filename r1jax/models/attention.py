"""Self-attention over full sequences: a dense reference, a blocked (flash-style) path in pure
JAX, and the platform kernels (cuDNN on GPU, splash on TPU: in shard_map under a mesh),
chosen in one place (`choose`).

All paths share one masking rule (`dense_mask`): a query sees a key when the key is not after
it in the row (causal), both carry the same segment id, and the key's id is not 0 (padding).
Queries may sit at an offset into the keys (query i at key position q_offset + i: a prompt
chunk against the cache written so far, `chunk_attention`); dense, blocked and cuDNN take the
offset, splash does not (its masks are static) and such a call runs blocked instead.
So left-padded prompts, right-padded completions and packed rows (several segments per row)
mask the same way everywhere. Queries of padding (segment 0) see no key: the dense softmax is
then uniform over all S keys, and every path gives that same mean of v there (`_padding_rows`),
so the paths agree on every row, read or not (the hidden state at the last padding position of
a left-padded row predicts its first token).

Shapes: q [N,T,H,Dq], k [N,S,K,Dq], v [N,S,K,Dv]; H = K*r query heads share each kv head (GQA)
and the value head size Dv may differ from Dq (DeepSeek's MLA). Einsum letters as in
transformer.py; i/j index query/key blocks of sizes bq/bk.

The blocked path runs an online softmax over key blocks inside a loop over query blocks, and a
custom VJP that recomputes each block's probabilities from the saved log-sum-exp (FlashAttention
2's backward), so neither pass holds more than one [bq, bk] score block per row and head.
Causal block skipping: key blocks after a query block's last position are never visited.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from r1jax import sharding as shd

f32 = jnp.float32
NEG_INF = -1e30  # finite, so a fully masked row gives a uniform softmax instead of NaN
IMPLEMENTATIONS = ("auto", "dense", "blocked", "cudnn", "splash")


def choose(
    impl: str, S: int, block_kv: int, dq: int, dv: int, dtype, platform=None, devices=None
) -> str:
    """The attention path for S keys: `impl` unless it is "auto". Auto: dense while the keys fit
    one key block (the blocked loop would do the same work with more steps; this covers decode-
    sized and the embedded run's rows), else splash on TPU: on one device, or on several when a
    mesh is set in the trace context (jax.set_mesh; sharding.under_mesh sets it for the jitted
    steps), since a Pallas kernel is not partitioned by XLA and runs in shard_map over that
    mesh (without one: blocked); cuDNN on GPU for bf16/fp16 with equal q/v head sizes of at
    most 128 (what its flash kernel takes; JAX partitions it), else blocked (pure JAX,
    partitioned like any other op)."""
    if impl != "auto":
        return impl
    if S <= block_kv:
        return "dense"
    platform = platform or jax.default_backend()
    devices = jax.device_count() if devices is None else devices
    if platform == "tpu":
        sharded = not jax.sharding.get_abstract_mesh().empty  # splash_sharded's shard_map
        return "splash" if devices == 1 or sharded else "blocked"
    low = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
    if platform in ("gpu", "cuda") and low and dq == dv and dq <= 128 and dq % 8 == 0:
        return "cudnn"
    return "blocked"


def dense_mask(seg_q_NT, seg_k_NS, q_offset=0):
    """[N,T,S] boolean: causal, within one segment, never onto padding (segment id 0). Query i
    sits at key position q_offset + i (a chunk of queries against the keys so far, q_offset
    may be traced)."""
    T, S = seg_q_NT.shape[1], seg_k_NS.shape[1]
    causal = (q_offset + jnp.arange(T))[:, None] >= jnp.arange(S)[None, :]
    same = seg_q_NT[:, :, None] == seg_k_NS[:, None, :]
    return causal[None] & same & (seg_k_NS[:, None, :] != 0)


def dense(q_NTHh, k_NSKh, v_NSKv, mask_NTS, scale: float | None = None):
    """Grouped-query attention with an explicit boolean mask; softmax in fp32. The reference.

    Laid out as plain batched matmuls over (row, kv head) with the r query heads of a kv head
    and the t positions merged, [n,k,r*t,h] @ [n,k,h,s]: XLA CPU runs the equivalent 5-d einsum
    ~2.4x slower (measured at n=32, t=288, H=4, K=2).
    """
    n, t, H, dh = q_NTHh.shape
    K, dv = k_NSKh.shape[2], v_NSKv.shape[-1]
    r = H // K
    q = q_NTHh.reshape(n, t, K, r, dh).transpose(0, 2, 3, 1, 4).reshape(n, K, r * t, dh)
    s = jnp.matmul(q, k_NSKh.transpose(0, 2, 3, 1), preferred_element_type=f32)
    s = s.reshape(n, K, r, t, -1)
    s = s / math.sqrt(dh) if scale is None else s * scale  # the division: results bit for bit
    p = jax.nn.softmax(jnp.where(mask_NTS[:, None, None], s, NEG_INF), axis=-1)
    p = p.astype(v_NSKv.dtype).reshape(n, K, r * t, -1)
    o = jnp.matmul(p, v_NSKv.transpose(0, 2, 1, 3))  # [n,k,r*t,dv]
    return o.reshape(n, K, r, t, dv).transpose(0, 3, 1, 2, 4).reshape(n, t, H, dv)


# ----------------------------------------------------------------------------------------------
# Blocked (flash-style) attention


def blocked(
    q_NTHh, k_NSKh, v_NSKv, seg_q_NT, seg_k_NS, *, causal=True, scale=None, bq, bk, q_offset=0
):
    """Exact attention with an online softmax over key blocks; memory linear in T and S.

    Lengths need not be multiples of the blocks: queries are padded with segment -1 (they match
    no key) and keys with segment 0 (padding), and the padding is cut off again. Causal: query
    i sits at key position q_offset + i (dense_mask), and key blocks after a query block's last
    position are skipped in both passes, so a chunk of queries against a long cache visits only
    the keys up to its end.
    """
    n, T, H, dq = q_NTHh.shape
    S, K, dv = k_NSKh.shape[1], k_NSKh.shape[2], v_NSKv.shape[-1]
    r = H // K
    bq, bk = min(bq, T), min(bk, S)
    nq, nk = -(-T // bq), -(-S // bk)
    Tp, Sp = nq * bq, nk * bk
    scale = 1 / math.sqrt(dq) if scale is None else scale
    q = jnp.pad(q_NTHh, ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
    # [nq, n, K, r*bq, dq]: one query block of all heads of a kv head as one matmul operand.
    q = q.reshape(n, nq, bq, K, r, dq).transpose(1, 0, 3, 4, 2, 5).reshape(nq, n, K, r * bq, dq)
    k = jnp.pad(k_NSKh, ((0, 0), (0, Sp - S), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    v = jnp.pad(v_NSKv, ((0, 0), (0, Sp - S), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    seg_q = jnp.pad(seg_q_NT, ((0, 0), (0, Tp - T)), constant_values=-1)
    seg_q = seg_q.reshape(n, nq, bq).transpose(1, 0, 2)  # [nq, n, bq]
    seg_k = jnp.pad(seg_k_NS, ((0, 0), (0, Sp - S)))  # [n, Sp]
    off = jnp.asarray(q_offset, jnp.int32)
    o = _flash(q, k, v, seg_q, seg_k, off, causal, float(scale), bk)  # [nq, n, K, r*bq, dv]
    o = o.reshape(nq, n, K, r, bq, dv).transpose(1, 0, 4, 2, 3, 5).reshape(n, Tp, H, dv)
    return _padding_rows(o[:, :T], seg_q_NT, v_NSKv)


def _padding_rows(o_NTHv, seg_q_NT, v_NSKv):
    """The dense path's output for queries that see no key (segment 0): the mean of v over all
    S keys, a uniform softmax. Linear in S, and differentiated by autodiff like dense's."""
    H, K = o_NTHv.shape[2], v_NSKv.shape[2]
    mean_v = jnp.repeat(jnp.mean(v_NSKv.astype(f32), axis=1), H // K, axis=1)  # [n,H,dv]
    empty = (seg_q_NT == 0)[:, :, None, None]
    return jnp.where(empty, mean_v[:, None].astype(o_NTHv.dtype), o_NTHv)


def _block_mask(seg_q, seg_k, off, i, j, bq, bk, causal):
    """[n,1,1,bq,bk] mask of query block i against key block j (seg_q [n,bq], seg_k [n,bk])."""
    m = (seg_q[:, :, None] == seg_k[:, None, :]) & (seg_k[:, None, :] != 0)
    if causal:
        m &= (off + i * bq + jnp.arange(bq))[:, None] >= (j * bk + jnp.arange(bk))[None, :]
    return m[:, None, None]


def _scores(q_blk, k_blk, scale, r):
    """q [n,K,r*bq,dq] . k [n,K,bk,dq] -> fp32 [n,K,r,bq,bk]."""
    n, K, rbq, _ = q_blk.shape
    s = jnp.matmul(q_blk, k_blk.transpose(0, 1, 3, 2), preferred_element_type=f32) * scale
    return s.reshape(n, K, r, rbq // r, -1)


def _kv_range(off, i, j, nq, nk, bq, bk, causal):
    """Key blocks a query block i visits: [0, hi); query blocks a key block j meets: [lo, nq)
    (empty when j starts after the last query's position off + nq*bq - 1)."""
    if not causal:
        return nk, 0
    hi = jnp.minimum(nk, (off + (i + 1) * bq - 1) // bk + 1)
    return hi, jnp.maximum(0, (j * bk - off) // bq)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _flash(q, k, v, seg_q, seg_k, off, causal, scale, bk):
    return _flash_fwd(q, k, v, seg_q, seg_k, off, causal, scale, bk)[0]


def _flash_fwd(q, k, v, seg_q, seg_k, off, causal, scale, bk):
    nq, n, K, rbq, _ = q.shape
    bq, dv, nk = seg_q.shape[-1], v.shape[-1], k.shape[2] // bk
    r = rbq // bq

    def q_block(_, xs):
        i, q_i, sq_i = xs

        def kv_block(j, carry):
            m, l, acc = carry
            k_j = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
            v_j = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)
            sk_j = jax.lax.dynamic_slice_in_dim(seg_k, j * bk, bk, axis=1)
            mask = _block_mask(sq_i, sk_j, off, i, j, bq, bk, causal)
            s = jnp.where(mask, _scores(q_i, k_j, scale, r), NEG_INF)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
            corr = jnp.exp(m - m_new)
            pv = jnp.matmul(
                p.astype(v.dtype).reshape(n, K, rbq, bk), v_j, preferred_element_type=f32
            )
            acc = acc * corr.reshape(n, K, rbq, 1) + pv
            return m_new, l * corr + p.sum(-1), acc

        init = (
            jnp.full((n, K, r, bq), NEG_INF, f32),
            jnp.zeros((n, K, r, bq), f32),
            jnp.zeros((n, K, rbq, dv), f32),
        )
        hi, _ = _kv_range(off, i, 0, nq, nk, bq, bk, causal)
        m, l, acc = jax.lax.fori_loop(0, hi, kv_block, init)
        # Queries that saw no key (padding) give 0, and a log-sum-exp the backward never uses.
        o = acc / jnp.where(l > 0, l, 1.0).reshape(n, K, rbq, 1)
        lse = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), 0.0)
        return None, (o.astype(v.dtype), lse)

    _, (o, lse) = jax.lax.scan(q_block, None, (jnp.arange(nq), q, seg_q))
    return o, (q, k, v, seg_q, seg_k, off, o, lse)


def _flash_bwd(causal, scale, bk, res, do):
    """FlashAttention-2's backward: per key block j, loop over the query blocks that see it,
    recompute p = exp(s - lse), and accumulate dk_j, dv_j locally and dq into a [T] buffer."""
    q, k, v, seg_q, seg_k, off, o, lse = res
    nq, n, K, rbq, dq = q.shape
    bq, nk = seg_q.shape[-1], k.shape[2] // bk
    r = rbq // bq
    # D_i = rowsum(dO * O), the softmax's correction term, per query: [nq, n, K, r, bq].
    delta = jnp.sum(do.astype(f32) * o.astype(f32), -1).reshape(nq, n, K, r, bq)

    def kv_block(dq_acc, xs):
        j, k_j, v_j, sk_j = xs

        def q_block(i, carry):
            dk, dv, dq_acc = carry
            q_i, do_i, sq_i = q[i], do[i], seg_q[i]
            mask = _block_mask(sq_i, sk_j, off, i, j, bq, bk, causal)
            s = _scores(q_i, k_j, scale, r)
            p = jnp.where(mask, jnp.exp(s - lse[i][..., None]), 0.0)  # [n,K,r,bq,bk]
            dp = jnp.matmul(do_i, v_j.transpose(0, 1, 3, 2), preferred_element_type=f32)
            ds = p * (dp.reshape(p.shape) - delta[i][..., None]) * scale
            p2, ds2 = p.reshape(n, K, rbq, bk), ds.reshape(n, K, rbq, bk)
            dv = dv + jnp.matmul(
                p2.astype(do.dtype).transpose(0, 1, 3, 2), do_i, preferred_element_type=f32
            )
            dk = dk + jnp.matmul(
                ds2.astype(q.dtype).transpose(0, 1, 3, 2), q_i, preferred_element_type=f32
            )
            dq_i = jnp.matmul(ds2.astype(k.dtype), k_j, preferred_element_type=f32)
            return dk, dv, dq_acc.at[i].add(dq_i)

        _, lo = _kv_range(off, 0, j, nq, nk, bq, bk, causal)
        init = (jnp.zeros(k_j.shape, f32), jnp.zeros(v_j.shape, f32), dq_acc)
        dk, dv, dq_acc = jax.lax.fori_loop(lo, nq, q_block, init)
        return dq_acc, (dk, dv)

    split = lambda x: x.reshape(n, K, nk, bk, x.shape[-1]).transpose(2, 0, 1, 3, 4)  # noqa: E731
    xs = (jnp.arange(nk), split(k), split(v), seg_k.reshape(n, nk, bk).transpose(1, 0, 2))
    dq_acc, (dk, dv) = jax.lax.scan(kv_block, jnp.zeros(q.shape, f32), xs)
    merge = lambda x: x.transpose(1, 2, 0, 3, 4).reshape(n, K, nk * bk, -1)  # noqa: E731
    return (
        dq_acc.astype(q.dtype),
        merge(dk).astype(k.dtype),
        merge(dv).astype(v.dtype),
        None,
        None,
        None,
    )


_flash.defvjp(_flash_fwd, _flash_bwd)


# ----------------------------------------------------------------------------------------------
# Platform kernels


def cudnn(
    q_NTHh, k_NSKh, v_NSKv, seg_q_NT, seg_k_NS, *, scale=None, implementation="cudnn", q_offset=0
):
    """jax.nn.dot_product_attention's fused kernel. cuDNN's own masks cannot say "same segment"
    or left padding, so the mask goes in as a [N,1,T,S] boolean, which JAX turns into a bias of
    that shape (per row, not per head: 1/H of the dense path's fp32 scores, without softmax);
    the same mask carries a query offset (dense_mask)."""
    mask = dense_mask(seg_q_NT, seg_k_NS, q_offset)[:, None]
    o = jax.nn.dot_product_attention(
        q_NTHh, k_NSKh, v_NSKv, mask=mask, scale=scale, implementation=implementation
    )
    return _padding_rows(o, seg_q_NT, v_NSKv)


def splash(q_NTHh, k_NSKh, v_NSKv, seg_NT, *, scale=None, bq, bk, interpret=False):
    """TPU splash attention (Pallas): causal, segment ids in the kernel, one kv head shared by
    its r query heads (the MQA kernel per kv head). T is padded to a multiple of the blocks
    with segment 0. Runs per device on the shapes it is given: under a mesh call it through
    `splash_sharded`. interpret=True: Pallas' interpreter (any backend, slow)."""
    # TPU-only kernels, imported when splash runs (Pallas TPU is not needed elsewhere).
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as sk,
    )
    from jax.experimental.pallas.ops.tpu.splash_attention import (  # TPU-only, as above
        splash_attention_mask as sm,
    )

    n, T, H, dq = q_NTHh.shape
    K = k_NSKh.shape[2]
    r = H // K
    b = max(bq, bk)
    Tp = -(-T // b) * b
    scale = 1 / math.sqrt(dq) if scale is None else scale
    pad = lambda x: jnp.pad(x, ((0, 0), (0, Tp - T)) + ((0, 0),) * (x.ndim - 2))  # noqa: E731
    q = (pad(q_NTHh) * scale).astype(q_NTHh.dtype)
    q = q.reshape(n, Tp, K, r, dq).transpose(0, 2, 3, 1, 4)  # [n,K,r,T,dq]
    k, v = pad(k_NSKh).transpose(0, 2, 1, 3), pad(v_NSKv).transpose(0, 2, 1, 3)  # [n,K,S,*]
    seg = pad(seg_NT).astype(jnp.int32)
    mask = sm.MultiHeadMask([sm.CausalMask((Tp, Tp)) for _ in range(r)])
    blocks = sk.BlockSizes(
        block_q=min(bq, Tp),
        block_kv=min(bk, Tp),
        block_kv_compute=min(bk, Tp),
        block_q_dkv=min(bq, Tp),
        block_kv_dkv=min(bk, Tp),
        block_kv_dkv_compute=min(bk, Tp),
        block_q_dq=min(bq, Tp),
        block_kv_dq=min(bk, Tp),
    )
    kernel = sk.make_splash_mqa_single_device(mask, block_sizes=blocks, interpret=interpret)

    def one(q_rTd, k_Sd, v_Sd, seg_T):
        return kernel(q_rTd, k_Sd, v_Sd, segment_ids=sk.SegmentIds(q=seg_T, kv=seg_T))

    per_kv = jax.vmap(one, in_axes=(0, 0, 0, None))  # over kv heads
    o = jax.vmap(per_kv)(q, k, v, seg)  # [n,K,r,Tp,dv]
    return _padding_rows(o.transpose(0, 3, 1, 2, 4).reshape(n, Tp, H, -1)[:, :T], seg_NT, v_NSKv)


def splash_sharded(q_NTHh, k_NSKh, v_NSKv, seg_NT, **kw):
    """`splash` on every device's own rows and heads when a mesh is set in the trace context
    (jax.set_mesh), else `splash` itself. XLA does not partition a Pallas kernel, so it runs in
    shard_map: rows split over the mesh axes that split the batch, heads over "tensor" when the
    kv heads divide by it (the r query heads of a kv head stay with it), else every device has
    all heads; an axis that does not divide stays replicated (sharding.logical_to_spec)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return splash(q_NTHh, k_NSKh, v_NSKv, seg_NT, **kw)
    P = jax.sharding.PartitionSpec
    rows, _, heads, _ = shd.logical_to_spec(("batch", None, "kv_heads", None), k_NSKh.shape, mesh)
    qkv, seg = P(rows, None, heads, None), P(rows, None)
    # check_vma=False: the kernel's pallas_call declares its outputs without varying axes (jax
    # 0.10.2 refuses it under check_vma); each device's output block depends on its own input
    # blocks only, so no collective is needed.
    return jax.shard_map(
        functools.partial(splash, **kw),
        in_specs=(qkv, qkv, qkv, seg),
        out_specs=qkv,
        check_vma=False,
    )(q_NTHh, k_NSKh, v_NSKv, seg_NT)


# ----------------------------------------------------------------------------------------------
# The model's entry point


def self_attention(segment_ids_NT, cfg, dq: int, dv: int, scale: float | None = None):
    """fn(q, k, v) -> [N,T,H,Dv] for one forward pass over rows with these segment ids; the path
    is chosen here, once, from cfg.attention and the shapes (and the dense mask built once).
    Splash runs in shard_map over the mesh set in the trace context if any (splash_sharded;
    sharding.under_mesh sets it for the jitted steps on a TPU mesh); off TPU, interpreted."""
    return chunk_attention(segment_ids_NT, segment_ids_NT, None, cfg, dq, dv, scale)


def chunk_attention(seg_q_NT, seg_k_NS, q_offset, cfg, dq: int, dv: int, scale=None):
    """fn(q, k, v) for T queries at key positions q_offset + [0, T) against S keys (a prompt
    chunk against the cache written so far; q_offset None: T == S, self-attention). The path is
    chosen from the S keys; splash has no query offset (its masks are static), so a chunk that
    would take it takes blocked instead."""
    impl = choose(cfg.attention, seg_k_NS.shape[1], cfg.attention_block_kv, dq, dv, cfg.dtype)
    off = 0 if q_offset is None else q_offset
    if impl == "splash" and q_offset is not None:
        impl = "blocked"
    sq, sk = seg_q_NT, seg_k_NS
    if impl == "dense":
        mask = dense_mask(sq, sk, off)
        return lambda q, k, v: dense(q, k, v, mask, scale)
    if impl == "blocked":
        kw = dict(scale=scale, bq=cfg.attention_block_q, bk=cfg.attention_block_kv, q_offset=off)
        return lambda q, k, v: blocked(q, k, v, sq, sk, **kw)
    if impl == "cudnn":
        return lambda q, k, v: cudnn(q, k, v, sq, sk, scale=scale, q_offset=off)
    if impl == "splash":
        kw = dict(scale=scale, bq=cfg.attention_block_q, bk=cfg.attention_block_kv)
        kw["interpret"] = jax.default_backend() != "tpu"  # the same wiring, in Pallas' interpreter
        return lambda q, k, v: splash_sharded(q, k, v, sq, **kw)
    raise ValueError(f"ModelConfig.attention={impl!r}; expected one of {IMPLEMENTATIONS}")
