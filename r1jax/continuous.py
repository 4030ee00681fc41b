"""Continuous-batching decoder: a fixed number of decode slots, refilled as rows end.

The static decoder (`sampling.generate`) advances all B*G rows in lockstep until the longest
has ended; with long-tailed lengths most of its row-steps compute rows that are already done.
Here `slots` rows are decoded at once. When a row ends, its slot takes the next pending row
(prompt-major order, n = b * G + g) in the same step, so every slot-step but those of the last
rows computes a live row.

KV: every prompt is prefilled once, as in the static decoder, into a prompt store [L,B,...];
a slot's own cache holds only its completion. By default all prompts are prefilled before
decoding starts; with `prefill_group` g the store starts empty and, before each chunk of
steps, a lax.while_loop prefills the next g prompts until the rows the chunk may take (the
next `slots` pending rows) are ready; a slot whose next row is not ready idles until then
(`_Store`). Decoding then starts after the first group, and prefill activations are those of g
prompts, not B. A slot attends to [its prompt's KV ; its own KV]
with one softmax (tfm._decode_attention), the prompt KV gathered per layer by the slot's prompt
index; a new row reuses the store, so the G samples of a prompt share one prefill, and its
first token comes from the prompt's stored last logits, with no model call.

Every decision (which slot takes which row, when the loop stops) is made on device inside one
`lax.while_loop`, so every process of a multi-host job runs the same program. Row n draws its
t-th token with the key fold_in(fold_in(key, n), t), as in the static decoder: the output is
the static decoder's, for any slot count, up to float rounding of the logits (tests check).

Cost: fewer row-steps (only live rows, until the last row ends), and each chunk of steps
attends to the smallest of 8 cache sizes (1/8 .. 8/8 of the limit, `cache_sizes`) that holds
its live slots' tokens to the chunk's end, chosen on device (lax.switch; each size compiles the
step once more). The weights are still read once per step for `slots` rows instead of B*G, and
each layer gathers the slots' prompt KV. On a tiny CPU model the net gain was ~2x useful
tokens/s at 80% of rows ending before a quarter of the limit (benchmarks/RESULTS.md); for
short, even lengths the static decoder is faster.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import sampling
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig


def num_slots(s: sampling.SamplingConfig, n_rows: int) -> int:
    """s.slots, at most one per row; 0 = a quarter of the rows (benchmarks/continuous.py)."""
    return min(s.slots or max(1, n_rows // 4), n_rows)


@functools.partial(jax.jit, static_argnames=("cfg", "s", "group_size"))
def generate(
    params,
    prompt_tokens_BP,
    prompt_mask_BP,
    key,
    end_at_N=None,
    *,
    cfg: ModelConfig,
    s: sampling.SamplingConfig,
    group_size: int = 1,
):
    """sampling.generate's contract (rows prompt-major, same keys), decoded in s.slots slots.
    key: one key, or one per prompt [B] (see _row_keys)."""
    if cfg.n_experts or cfg.kv_lora_rank:  # its slot decode step is the dense-attention one
        raise ValueError(
            "config.sampling.decoder='continuous' supports dense-attention, dense-MLP models only"
            " (not MoE or MLA yet); use decoder='static'"
        )
    G, B = group_size, prompt_tokens_BP.shape[0]
    N, T = B * G, s.max_new_tokens
    sampling.check_end_at(end_at_N, N, s)
    S, T_pad = num_slots(s, N), -(-T // s.chunk) * s.chunk
    keys_N = _row_keys(key, B, G)
    lazy = 0 < s.prefill_group < B
    store = _Store(params, prompt_tokens_BP, prompt_mask_BP, cfg, s, G, lazy)
    length_B = store.length_B
    # the decode step's weights: per-layer lists with cfg.unroll_decode
    dparams = tfm.unstack_layers(params)[0] if cfg.unroll_decode else params
    slot = jnp.arange(S)

    def step(pre, state, _):
        # row_S: the slot's row (N: idle, no rows ready or left); t_S: its next token's index.
        prefix, logits_BV, ready = pre
        cache, logits, hist, toks, logps, row, t, pending = state
        live = row < N
        r = jnp.minimum(row, N - 1)
        end_at = None if end_at_N is None else end_at_N[r]
        tok, logp = sampling.draw_step(keys_N[r], logits, t, end_at, s)
        hist = hist.at[slot, t].set(tok)
        # Idle slots write to the spare last row of toks and logps, dropped at the end.
        toks = toks.at[row, t].set(tok)
        logps = logps.at[row, t].set(logp)
        ended = ~live | sampling._ends(hist, t, tok, s) | (t >= T - 1)
        h, cache = slot_decode_step(
            dparams, tok, length_B[r // G] + t, t, r // G, prefix, cache, cfg
        )
        # Ended slots take the pending rows in order, up to the last row whose prompt is
        # prefilled (`ready`, N when all are); the others idle until rows are ready.
        want = pending + jnp.cumsum(ended) - 1
        row = jnp.where(ended, jnp.where(want < ready, want, N), row)
        fresh = logits_BV[jnp.minimum(row, N - 1) // G]  # a new row's first logits: its prompt's
        logits = jnp.where(ended[:, None], fresh, tfm.logits_from_hidden(dparams, h, cfg))
        t = jnp.where(ended, 0, t + 1)
        pending = jnp.minimum(pending + jnp.sum(ended), ready)
        return (cache, logits, hist, toks, logps, row, t, pending), None

    def chunk_on(n):  # a chunk of steps that attends to (and writes) the first n cache entries
        def run(state, pre):
            body = functools.partial(step, pre)
            out = jax.lax.scan(body, (_head(state[0], n), *state[1:]), None, length=s.chunk)[0]
            return (sampling._grow_suffix(out[0], state[0]), *out[1:])

        return run

    sizes = cache_sizes(T_pad, s.chunk)

    def chunk(state, pre):
        # The smallest cache size that holds every live slot's tokens to the end of the chunk:
        # a slot refilled mid-chunk restarts at 0, so t_S + chunk bounds every index written.
        need = jnp.max(jnp.where(state[5] < N, state[6], 0)) + s.chunk
        j = jnp.sum(jnp.asarray(sizes) < jnp.minimum(need, T_pad))
        return jax.lax.switch(j, [chunk_on(n) for n in sizes], state, pre)

    kv = sampling.kv_dtype(s)
    # Before the first chunk: rows 0..S-1 are ready (lazy: their prompts' groups prefilled).
    lazy_state = store.fill(store.init(), S) if lazy else ()
    pre = store.view(lazy_state)
    state = (
        tfm.init_suffix(cfg, S, T_pad, kv),
        pre[1][slot // G],
        jnp.full((S, T_pad), s.pad_id, jnp.int32),
        jnp.full((N + 1, T_pad), s.pad_id, jnp.int32),
        jnp.zeros((N + 1, T_pad), jnp.float32),
        slot,
        jnp.zeros((S,), jnp.int32),
        jnp.asarray(S, jnp.int32),
    )
    if lazy:  # the prompt store is loop state: each chunk first prefills what its rows need

        def body(st):
            state, lst = st
            lst = store.fill(lst, state[7] + S)
            return chunk(state, store.view(lst)), lst

        # Rows not yet taken (pending < N) keep the loop going while every slot idles.
        going = lambda st: jnp.any(st[0][5] < N) | (st[0][7] < N)  # noqa: E731
        state = jax.lax.while_loop(going, body, (state, lazy_state))[0]
    else:
        state = jax.lax.while_loop(lambda st: jnp.any(st[5] < N), lambda st: chunk(st, pre), state)
    return sampling.finish(state[3][:N], state[4][:N], s)


class _Store:
    """The prompts' prefix KV and first logits [B, ...], shared by each prompt's G rows.

    Eager (s.prefill_group 0 or >= B): every prompt prefilled once, before decoding. Lazy: the
    store starts empty (zeros for B' = B rounded up to whole groups, padded with empty prompts)
    and `fill` prefills the next s.prefill_group prompts at a time, inside the decode loop,
    until the rows a chunk may take are ready: decoding starts after the first group, and
    prefill activations are for one group, not all B prompts. With cfg.unroll_decode the prefix
    K/V are per-layer lists (tfm.unstack_layers), written layer by layer."""

    def __init__(self, params, tokens_BP, mask_BP, cfg, s, G: int, lazy: bool):
        self.params, self.cfg, self.s, self.G = params, cfg, s, G
        self.B, self.length_B = tokens_BP.shape[0], mask_BP.sum(1).astype(jnp.int32)
        if not lazy:
            h_BD, prefix = sampling.prefill(params, tokens_BP, mask_BP, cfg, s)
            self.prefix = self._layers(prefix)
            self.logits_BV = tfm.logits_from_hidden(params, h_BD, cfg)
            return
        self.g = s.prefill_group
        pad = -self.B % self.g
        self.tokens = jnp.pad(tokens_BP, ((0, pad), (0, 0)))
        self.mask = jnp.pad(mask_BP, ((0, pad), (0, 0)))
        self.prefix = {"mask": self.mask.astype(bool), "length": self.mask.sum(1)}

    def _layers(self, prefix):
        return tfm.unstack_prefix(prefix) if self.cfg.unroll_decode else prefix

    def _prefill_group(self, tokens, mask):
        h, prefix = sampling.prefill(self.params, tokens, mask, self.cfg, self.s)
        return prefix["k"], prefix["v"], tfm.logits_from_hidden(self.params, h, self.cfg)

    def init(self):
        """(k, v, first logits, prompts prefilled) with nothing prefilled yet."""
        Bp = self.tokens.shape[0]
        k, v, lg = jax.eval_shape(self._prefill_group, self.tokens[: self.g], self.mask[: self.g])
        zeros = lambda a: jnp.zeros(a.shape[:1] + (Bp,) + a.shape[2:], a.dtype)  # noqa: E731
        kv = self._layers({"k": zeros(k), "v": zeros(v)})
        return kv["k"], kv["v"], jnp.zeros((Bp,) + lg.shape[1:], lg.dtype), jnp.int32(0)

    def fill(self, lst, rows):
        """Prefills the next groups until the first `rows` rows (at most B*G) are ready."""
        need = jnp.minimum(rows, self.B * self.G)

        def one(lst):
            k, v, lg, done = lst
            part = lambda a: jax.lax.dynamic_slice_in_dim(a, done, self.g, axis=0)  # noqa: E731
            k_g, v_g, lg_g = self._prefill_group(part(self.tokens), part(self.mask))
            put = lambda a, x, ax: jax.lax.dynamic_update_slice_in_dim(a, x, done, ax)  # noqa: E731
            if isinstance(k, list):
                k = [put(a, x, 0) for a, x in zip(k, k_g)]
                v = [put(a, x, 0) for a, x in zip(v, v_g)]
            else:
                k, v = put(k, k_g, 1), put(v, v_g, 1)
            return k, v, put(lg, lg_g, 0), done + self.g

        return jax.lax.while_loop(lambda lst: lst[3] * self.G < need, one, lst)

    def view(self, lst):
        """(prefix, first logits [B,V], rows ready) as the decode step reads them."""
        if not lst:
            return self.prefix, self.logits_BV, self.B * self.G
        k, v, lg, done = lst
        return {**self.prefix, "k": k, "v": v}, lg, jnp.minimum(done * self.G, self.B * self.G)


def _row_keys(key, B: int, G: int):
    """sampling.row_keys(key, B * G); with one key per prompt (key [B], as evaluation keys each
    question apart), row b * G + g gets fold_in(key[b], g), as sampling.generate on prompt b."""
    if key.ndim == 0:
        return sampling.row_keys(key, B * G)
    if key.shape != (B,):
        raise ValueError(f"key: one key or one per prompt ({B},), got shape {key.shape}")
    return jax.vmap(lambda k: sampling.row_keys(k, G))(key).reshape(B * G)


_SIZES = 8  # cache sizes the decode loop chooses from (each compiles the step once more)


def cache_sizes(T_pad: int, chunk: int) -> list[int]:
    """1/8, 2/8, ... of T_pad, in whole chunks: a chunk reads only the smallest size that holds
    its slots' tokens, not a cache sized for the whole limit."""
    sizes = {min(T_pad, -(-T_pad * i // (_SIZES * chunk)) * chunk) for i in range(1, _SIZES + 1)}
    return sorted(sizes)


def _head(cache: dict, n: int) -> dict:
    """The first n entries of each slot's cache (k [..,Dh,T], v [..,T,Dh]; any layout)."""
    if cache["v"][0].shape[-2] == n:  # the full cache: no copy
        return cache
    k = jax.tree.map(lambda a: a[..., :n], cache["k"])
    v = jax.tree.map(lambda a: a[..., :n, :], cache["v"])
    return {**cache, "k": k, "v": v}


def slot_decode_step(params, tok_S, pos_S, t_S, prompt_S, prefix: dict, cache: dict, cfg):
    """tfm.decode_step for slots at different steps: slot i writes its token's K/V at its own
    index t_S[i], attends to the prompt prompt_S[i]'s prefix and its own first t_S[i]+1
    entries. Returns the hidden state [S,D] and the cache. Weights and caches stacked over
    layers (lax.scan) or per-layer lists (cfg.unroll_decode), as in tfm.decode_step."""
    v0 = cache["v"][0] if isinstance(cache["v"], list) else cache["v"]
    valid = (jnp.arange(v0.shape[-2]) <= t_S[:, None])[:, None, None]  # [S,1,1,T]
    pmask = prefix["mask"][prompt_S]
    slot = jnp.arange(tok_S.shape[0])

    def new_kv(x, lp):
        q, k, v = tfm._qkv(x, lp, pos_S[:, None], cfg)
        return q, k[:, 0], v[:, 0]  # k, v [S,K,Dh]: one column / row per slot

    def attend(x, q, lp, pk, pv, ck, cv):  # ck [S,K,Dh,T], cv [S,K,T,Dh]: this layer's cache
        o = tfm._decode_attention(q[:, 0], pk[prompt_S], pv[prompt_S], pmask, ck, cv, valid)
        return tfm._finish_block(x, o, lp, cfg)

    x = tfm.embed(params, tok_S[:, None], cfg)
    if isinstance(params["layers"], list):
        ck, cv = list(cache["k"]), list(cache["v"])
        for i, lp in enumerate(params["layers"]):
            q, k, v = new_kv(x, lp)
            ck[i] = ck[i].at[slot, :, :, t_S].set(k.astype(ck[i].dtype))
            cv[i] = cv[i].at[slot, :, t_S, :].set(v.astype(cv[i].dtype))
            x = attend(x, q, lp, prefix["k"][i], prefix["v"][i], ck[i], cv[i])
    else:

        def body(carry, xs):  # the stacked cache is a carry, so it is updated in place
            x, ck, cv = carry
            lp, li, pk, pv = xs
            q, k, v = new_kv(x, lp)
            ck = ck.at[li, slot, :, :, t_S].set(k.astype(ck.dtype))
            cv = cv.at[li, slot, :, t_S, :].set(v.astype(cv.dtype))
            return (attend(x, q, lp, pk, pv, ck[li], cv[li]), ck, cv), None

        xs = (params["layers"], jnp.arange(cfg.n_layers), prefix["k"], prefix["v"])
        (x, ck, cv), _ = jax.lax.scan(body, (x, cache["k"], cache["v"]), xs)
    h = tfm.rms_norm(x[:, 0], params["final_norm"], cfg.rms_eps)
    return h, {"k": ck, "v": cv, "index": cache["index"]}
