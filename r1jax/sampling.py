"""Group sampler: prefill each prompt once, share its KV cache with its G samples, decode.

Prefill (`prefill`) runs the prompts through the model at once, or, with `prefill_chunk`,
prefill_chunk positions at a time, each chunk attending to the KV of the chunks before it
(tfm.prefill_chunked), so that its activations are batch x chunk instead of batch x prompt
length; both decoders prefill through it.

Decoding runs on device as a `lax.while_loop` over chunks, each chunk a `lax.scan` of `chunk`
steps; the loop stops after the chunk in which every row has ended (EOS, a stop sequence, or
max_new_tokens). There are three such loops in a row, with a per-row KV cache of ~1/4, 1/2 and
all of max_new_tokens, so that early steps do not read (and on XLA CPU copy) a cache sized for
the last. Rows advance in lockstep, and prompts are left-padded to a bucketed length, so there
is one compilation per (batch, prompt bucket, config).

Tokens are drawn by inverse CDF with one uniform per row (`_draw`); top-p looks for the nucleus
among the top 1024 logits before it sorts the vocabulary. Both are exact. Row n = b * G + g draws
its t-th token with the key fold_in(fold_in(key, n), t) (`row_keys`), so a completion depends on
the seed, its prompt and its sample index only: the continuous decoder (r1jax/continuous.py,
`decoder="continuous"`), which decodes a fixed number of slots refilled as rows end, gives the
same completions at any slot count. The KV cache is bf16 on accelerators by default (`kv_dtype`).

Sampler log-probs: log softmax(logits / T) of the sampled token under the *full* temperature-
scaled distribution, before top-k/top-p truncation. That is exactly the distribution the
trainer's `token_logprobs(..., temperature=T)` computes, so the two agree to float rounding
when there is no truncation (tests check 1e-5). With truncation the sampler actually draws from
the renormalised truncated distribution; the difference is the usual, documented support
mismatch (Tunix and TRL behave the same way). Greedy (T = 0) reports log-probs at T = 1.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k
    chunk: int = 16  # decode steps between checks that every row has ended
    eos_ids: tuple[int, ...] = ()
    # Stop sequences as token ids; a row ends when its last tokens equal one of them.
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    pad_id: int = 0
    # "static": rows in lockstep until the last ends; "continuous": a fixed number of decode
    # slots, refilled as rows end (r1jax.continuous). Same output for the same key.
    decoder: str = "static"
    slots: int = 0  # continuous decoder: rows decoded at once (0 = a quarter of the rows)
    kv_dtype: str = "auto"  # KV cache dtype; auto = bfloat16 on accelerators, float32 on CPU
    # Prompt positions prefilled per forward (0 = the whole prompt at once): each chunk attends
    # to the K/V of the chunks before it, so prefill activations are batch x prefill_chunk,
    # not batch x prompt length (tfm.prefill_chunked; not for capacity-limited MoE). Same
    # output up to float rounding.
    prefill_chunk: int = 0
    # Continuous decoder: prompts prefilled at a time inside the decode loop, as the rows to
    # be taken reach them (0 = every prompt before decoding starts; r1jax.continuous._Store).
    prefill_group: int = 0

    def __post_init__(self):
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.chunk <= 0:
            raise ValueError(f"top_k must be >= 0 and chunk > 0, got {self.top_k}, {self.chunk}")
        if self.decoder not in ("static", "continuous") or self.slots < 0:
            raise ValueError(
                f"decoder must be static or continuous and slots >= 0, got {self.decoder!r}, "
                f"{self.slots}"
            )
        if self.prefill_chunk < 0 or self.prefill_group < 0:
            raise ValueError(
                f"prefill_chunk and prefill_group must be >= 0, got {self.prefill_chunk}, "
                f"{self.prefill_group}"
            )
        if self.kv_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"kv_dtype must be auto, float32 or bfloat16, got {self.kv_dtype!r}")


def kv_dtype(s: SamplingConfig):
    """The KV cache dtype: bf16 halves the cache on accelerators; XLA CPU computes bf16 slowly."""
    if s.kv_dtype == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return jnp.dtype(s.kv_dtype)


def row_keys(key, n: int):
    """Row n's key, fold_in(key, n) with n = prompt * G + sample: a completion depends on the
    seed, its prompt and its sample index only, not on which rows are decoded beside it."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def step_keys(keys_N, t_N):
    """Each row's key for its t-th token."""
    return jax.vmap(jax.random.fold_in)(keys_N, t_N)


def bucket(n: int, minimum: int = 16) -> int:
    """Prompt lengths are padded up to a power of two (>= minimum) to bound recompiles."""
    return max(minimum, 1 << max(0, (n - 1).bit_length()))


def pad_prompts(prompts: list[list[int]], pad_id: int, length: int | None = None):
    """Left-pads token lists to `length` (default: the bucket of the longest)."""
    length = length or bucket(max(len(p) for p in prompts))
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        if len(p) > length:
            raise ValueError(f"prompt {i} has {len(p)} tokens, more than the length {length}")
        if p:
            tokens[i, length - len(p) :] = p
            mask[i, length - len(p) :] = 1
    return tokens, mask


_TOP_P_CANDIDATES = 1024  # the nucleus is looked for among this many top logits first


def truncate_logits(logits_NV, top_k: int, top_p: float):
    """Sets everything outside the top-k / nucleus (top-p) set to -inf."""
    if top_k:
        kth = jax.lax.top_k(logits_NV, top_k)[0][:, -1:]
        logits_NV = jnp.where(logits_NV < kth, -jnp.inf, logits_NV)
    if top_p < 1.0:
        logz = jax.nn.logsumexp(logits_NV, axis=-1, keepdims=True)
        v = logits_NV.shape[-1]
        m = min(v, _TOP_P_CANDIDATES)
        # Sorting a 150k vocabulary took seconds per step on CPU. The top m logits, in order,
        # are the head of the full sort, so they give the same cutoff whenever their mass
        # reaches top_p; only when it does not (a flat distribution) is everything sorted.
        cutoff, mass = _nucleus_cutoff(jax.lax.top_k(logits_NV, m)[0], logz, top_p)
        if m < v:
            cutoff = jax.lax.cond(
                jnp.all(mass >= top_p),
                lambda: cutoff,
                lambda: _nucleus_cutoff(jnp.sort(logits_NV, axis=-1)[:, ::-1], logz, top_p)[0],
            )
        logits_NV = jnp.where(logits_NV < cutoff, -jnp.inf, logits_NV)
    return logits_NV


def _nucleus_cutoff(sorted_NM, logz_N1, top_p: float):
    """(smallest kept logit, mass of the M given logits) for logits sorted in decreasing order.

    A token is kept if the mass strictly before it is < top_p (the first is always kept).
    """
    probs = jnp.exp(sorted_NM - logz_N1)
    cum = jnp.cumsum(probs, axis=-1)
    cutoff = jnp.min(jnp.where(cum - probs < top_p, sorted_NM, jnp.inf), axis=-1, keepdims=True)
    return cutoff, cum[:, -1:]


def _draw(keys_N, weights_NV, block: int):
    """One token per row with probability weights / sum(weights), by inverse CDF in two levels.

    One uniform per row: pick the vocabulary block whose cumulative mass passes it, then the
    token inside that block. Gumbel-max (`jax.random.categorical`) needs a random number per
    vocabulary entry instead, which on CPU cost several times the LM head for a 150k vocabulary.
    Float rounding can leave the uniform at or past the last cumulative sum; the clip to the last
    non-zero entry keeps zero-weight (truncated) tokens unreachable.
    """
    n, v = weights_NV.shape
    w = weights_NV.reshape(n, v // block, block)
    mass_Nb = w.sum(-1)
    cum_Nb = jnp.cumsum(mass_Nb, -1)
    u = jax.vmap(lambda k: jax.random.uniform(k, (), weights_NV.dtype))(keys_N) * cum_Nb[:, -1]
    blk = jnp.minimum(jnp.sum(cum_Nb <= u[:, None], -1), _last_nonzero(mass_Nb))
    before = jnp.take_along_axis(cum_Nb, jnp.maximum(blk - 1, 0)[:, None], 1)[:, 0]
    inner = jnp.take_along_axis(w, blk[:, None, None], 1)[:, 0]  # [N, block]
    rest = u - jnp.where(blk > 0, before, 0.0)
    j = jnp.minimum(jnp.sum(jnp.cumsum(inner, -1) <= rest[:, None], -1), _last_nonzero(inner))
    return (blk * block + j).astype(jnp.int32)


def _last_nonzero(x_NM):
    m = x_NM.shape[-1]
    return m - 1 - jnp.argmax(x_NM[:, ::-1] > 0, axis=-1)


def _pick(keys_N, logits_NV, s: SamplingConfig):
    """Returns (token, log-prob under the full temperature-scaled distribution); row n draws
    with keys_N[n]."""
    if s.temperature == 0:
        tok = jnp.argmax(logits_NV, axis=-1).astype(jnp.int32)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits_NV, -1), tok[:, None], -1)[:, 0]
        return tok, logp
    v = logits_NV.shape[-1]
    # Blocks of the draw: the largest of 256..32 that divides V (151936 = 1187 * 128), else
    # padding to 256 with -inf (zero weight), which costs an extra pass over [N,V].
    block = next((b for b in (256, 128, 64, 32) if v % b == 0), 256)
    scaled = logits_NV.astype(jnp.float32) / s.temperature
    if v % block:
        scaled = jnp.pad(scaled, ((0, 0), (0, -v % block)), constant_values=-jnp.inf)
    m = jnp.max(scaled, axis=-1, keepdims=True)
    e = jnp.exp(scaled - m)  # one pass serves both the draw and the log-normaliser
    weights = e
    if s.top_k or s.top_p < 1.0:  # the arg-max is always kept, so some weight stays > 0
        weights = jnp.where(truncate_logits(scaled, s.top_k, s.top_p) > -jnp.inf, e, 0.0)
    tok = _draw(keys_N, weights, block)
    logz = m[:, 0] + jnp.log(jnp.sum(e, axis=-1))
    return tok, jnp.take_along_axis(scaled, tok[:, None], -1)[:, 0] - logz


def _ends(tokens_NT, t_N, tok_N, s: SamplingConfig):
    """Whether row n ends with tok_N[n], its t_N[n]-th token (already in tokens_NT)."""
    ended = jnp.isin(tok_N, jnp.asarray(s.eos_ids, jnp.int32)) if s.eos_ids else tok_N < 0
    t_N = jnp.broadcast_to(t_N, tok_N.shape)
    for seq in s.stop_sequences:
        m = len(seq)
        if m == 1:
            ended |= tok_N == seq[0]
            continue
        at = jnp.maximum(t_N[:, None] - m + 1 + jnp.arange(m), 0)
        tail = jnp.take_along_axis(tokens_NT, at, axis=1)
        ended |= (t_N >= m - 1) & jnp.all(tail == jnp.asarray(seq, jnp.int32), axis=1)
    return ended


def draw_step(keys_N, logits_NV, t_N, end_at_N, s: SamplingConfig):
    """Token and sampler log-prob of each row's t-th step (one key per row, fold_in t).

    end_at_N (None, or [N] lengths, for benchmarks and tests): the row's token at t = end_at-1 is
    replaced by eos_ids[0] (with its log-prob), so lengths can be forced identically on any
    decoder while everything else is sampled as usual.
    """
    tok, logp = _pick(step_keys(keys_N, t_N), logits_NV, s)
    if end_at_N is None:
        return tok, logp
    eos = s.eos_ids[0]
    scaled = logits_NV / (s.temperature or 1.0)
    logp_eos = scaled[:, eos] - jax.nn.logsumexp(scaled, axis=-1)
    force = t_N == end_at_N - 1
    return jnp.where(force, eos, tok), jnp.where(force, logp_eos, logp)


def check_end_at(end_at_N, n: int, s: SamplingConfig):
    if end_at_N is not None and (not s.eos_ids or end_at_N.shape != (n,)):
        raise ValueError(f"end_at needs eos_ids and shape ({n},), got {end_at_N.shape}")


@functools.partial(jax.jit, static_argnames=("cfg", "s", "group_size"))
def generate(
    params,
    prompt_tokens_BP,
    prompt_mask_BP,
    key,
    end_at_N=None,
    *,
    cfg: ModelConfig,
    s: SamplingConfig,
    group_size: int = 1,
):
    """Samples `group_size` completions per prompt. Rows are prompt-major: n = b * G + g, and
    row n draws its t-th token with fold_in(fold_in(key, n), t) (see row_keys).

    Returns a dict of [N, max_new_tokens] arrays `tokens` (pad after the end), `logp`, `mask`
    (1 up to and including the ending token) and [N] `length`, `truncated` (no EOS or stop
    sequence before max_new_tokens). end_at_N: see draw_step.
    """
    G, B = group_size, prompt_tokens_BP.shape[0]
    N, T = B * G, s.max_new_tokens
    check_end_at(end_at_N, N, s)
    T_pad = -(-T // s.chunk) * s.chunk
    h_BD, prefix = prefill(params, prompt_tokens_BP, prompt_mask_BP, cfg, s)
    logits = jnp.repeat(tfm.logits_from_hidden(params, h_BD, cfg), G, axis=0)
    start_pos = jnp.repeat(prefix["length"], G).astype(jnp.int32)
    keys = row_keys(key, N)
    if cfg.unroll_decode:
        params, prefix = tfm.unstack_layers(params, prefix)

    def step(state, _):
        suffix, logits, toks, logps, done, t = state
        tok, logp = draw_step(keys, logits, jnp.full((N,), t), end_at_N, s)
        tok = jnp.where(done, s.pad_id, tok)
        toks = jax.lax.dynamic_update_slice_in_dim(toks, tok[:, None], t, axis=1)
        logps = jax.lax.dynamic_update_slice_in_dim(
            logps, jnp.where(done, 0.0, logp)[:, None], t, axis=1
        )
        new_done = done | _ends(toks, t, tok, s) | (t >= T - 1)
        h, suffix = tfm.decode_step(params, tok, start_pos + t, prefix, suffix, cfg)
        logits = tfm.logits_from_hidden(params, h, cfg)
        return (suffix, logits, toks, logps, new_done, t + 1), done

    def chunk(state):
        state, done_before = jax.lax.scan(step, state, None, length=s.chunk)
        return state

    # Phases with a growing cache (see _phase_lengths): attention reads only the cache of the
    # current phase, not one sized for the whole generation, at the cost of compiling the decode
    # body once per phase.
    lengths = _phase_lengths(T_pad, s.chunk)
    toks0 = jnp.full((N, T_pad), s.pad_id, jnp.int32)
    kv = kv_dtype(s)
    state = (
        tfm.init_suffix(cfg, N, lengths[0], kv),
        logits,
        toks0,
        jnp.zeros((N, T_pad), jnp.float32),
        jnp.zeros((N,), bool),
        jnp.zeros((), jnp.int32),
    )
    for j, end in enumerate(lengths):
        if j:
            state = (_grow_suffix(state[0], tfm.init_suffix(cfg, N, end, kv)), *state[1:])
        state = jax.lax.while_loop(
            lambda st, end=min(T, end): (st[5] < end) & ~jnp.all(st[4]), chunk, state
        )
    _, _, toks, logps, _, _ = state
    return finish(toks, logps, s)


def prefill(params, prompt_tokens_BP, prompt_mask_BP, cfg: ModelConfig, s: SamplingConfig):
    """tfm.prefill (or, with s.prefill_chunk shorter than the prompts, tfm.prefill_chunked)
    with the cache in the sampler's KV dtype."""
    tfm.check_prefill_chunk(cfg, s.prefill_chunk)
    if 0 < s.prefill_chunk < prompt_tokens_BP.shape[1]:
        h_BD, prefix = tfm.prefill_chunked(
            params, prompt_tokens_BP, prompt_mask_BP, cfg, s.prefill_chunk
        )
    else:
        h_BD, prefix = tfm.prefill(params, prompt_tokens_BP, prompt_mask_BP, cfg)
    kv = kv_dtype(s)  # k, v; or MLA's latent cache kv
    return h_BD, {**prefix, **{n: prefix[n].astype(kv) for n in ("k", "v", "kv") if n in prefix}}


def finish(toks_NT, logps_NT, s: SamplingConfig) -> dict:
    """The output contract from raw draws [N, >= T]: each row up to and including its first
    ending token; pad, zero log-prob and mask 0 after it."""
    T = s.max_new_tokens
    toks, logps = toks_NT[:, :T], logps_NT[:, :T]
    idx = jnp.arange(T)
    ended = jax.vmap(lambda r: _first_end(r, s))(toks)
    length = jnp.where(ended < T, ended + 1, T)
    mask = (idx[None] < length[:, None]).astype(jnp.int32)
    toks = jnp.where(mask > 0, toks, s.pad_id)
    return {
        "tokens": toks,
        "logp": logps * mask,
        "mask": mask,
        "length": length,
        "truncated": ended >= T,
    }


_PHASES = 3


def _phase_lengths(T_pad: int, chunk: int) -> list[int]:
    """Suffix-cache length of each decode phase: about T_pad/4, T_pad/2 and T_pad, in whole
    chunks. A step attends to its phase's cache, on average ~0.7 of the full one."""
    lengths: list[int] = []
    for j in reversed(range(_PHASES)):
        n = min(T_pad, max(chunk, -(-(T_pad >> j) // chunk) * chunk))
        if not lengths or n > lengths[-1]:
            lengths.append(n)
    return lengths


def _grow_suffix(suffix: dict, empty: dict) -> dict:
    """`suffix` copied into the start of the larger, empty cache `empty` (any layout)."""

    def grow(v, e):
        return jax.lax.dynamic_update_slice(e, v, (0,) * v.ndim)

    names = [k for k in ("k", "v", "kv") if k in suffix]  # kv: MLA's latent cache
    return {**suffix, **{k: jax.tree.map(grow, suffix[k], empty[k]) for k in names}}


def _first_end(row_T, s: SamplingConfig):
    """Index of the first ending token of one row (T if none)."""
    T = row_T.shape[0]
    ends = jnp.isin(row_T, jnp.asarray(s.eos_ids, jnp.int32)) if s.eos_ids else row_T < -1
    for seq in s.stop_sequences:
        m = len(seq)
        if m > T:
            continue
        win = jnp.stack([row_T[i : T - m + 1 + i] for i in range(m)], axis=1)
        hit = jnp.all(win == jnp.asarray(seq, jnp.int32), axis=1)
        ends |= jnp.pad(hit, (m - 1, 0))
    return jnp.min(jnp.where(ends, jnp.arange(T), T))


def sample_texts(
    params,
    cfg: ModelConfig,
    tokenizer,
    prompts: list[str],
    s: SamplingConfig,
    num_samples: int = 1,
    seed: int = 0,
) -> list[dict]:
    """Text in, text out: for scripts and notebooks. Rows are prompt-major."""
    ids = [tokenizer.encode_prompt(p) for p in prompts]
    tokens, mask = pad_prompts(ids, s.pad_id)
    out = jax.device_get(
        generate(params, tokens, mask, jax.random.key(seed), cfg=cfg, s=s, group_size=num_samples)
    )
    rows = []
    for n in range(len(prompts) * num_samples):
        completion = [int(t) for t in out["tokens"][n, : out["length"][n]]]
        rows.append(
            {
                "prompt": prompts[n // num_samples],
                "completion": tokenizer.decode(completion),
                "token_ids": completion,
                "truncated": bool(out["truncated"][n]),
            }
        )
    return rows
