"""Policy losses of the GRPO family (grpo, dr_grpo, dapo, gspo) with exact gradient accumulation.

Accumulation design. Every variant is a weighted sum over tokens (or sequences):
    loss = sum_{i,t} weight_NT[i,t] * (pg_{i,t} + beta * kl_{i,t})
where `weight_NT` holds the variant's normaliser, computed ONCE over the whole minibatch by
`token_weights` (true sequence count, true token count, ...). `policy_loss` returns that SUM for
whatever slice of the minibatch it is given, so summing the losses (and gradients) of any split
into micro-batches gives the full-minibatch loss (and gradient) exactly, whatever the micro-batch
sizes or token counts. This is what TRL approximates by dividing each micro-batch's mean by the
number of accumulation steps (exact for grpo/dr_grpo only when micro-batches have equal sizes).

Variants (`LossConfig.loss_type`; r = pi_theta / pi_old per token, A = advantage of the sequence):
- "grpo"    DeepSeekMath: per-sequence token mean, then mean over the N sequences;
            weight = mask / (|o_i| * N). pg = -min(r A, clip(r, 1-eps_lo, 1+eps_hi) A).
            Defaults eps 0.2/0.2, beta 0.04 (k3 KL in the loss). TRL loss_type="grpo".
- "dr_grpo" Dr. GRPO: token sum over a constant, weight = mask / (N * max_len) (TRL uses
            max_completion_length). Dr. GRPO also drops the std scaling of the advantage: that is
            the advantage's config (`group_advantages(scale="none")`), not the loss's. beta 0.
- "dapo"    DAPO: token mean over the whole minibatch, weight = mask / total_tokens; clip-higher
            eps 0.2/0.28; no KL by default. TRL loss_type="dapo" (its num_items_in_batch).
- "gspo"    GSPO: sequence ratio s_i = exp(mean_t log r_{i,t}), one clipped term per sequence with
            weight sum_t weight_NT[i,t] = 1/N (token_weights gives it the grpo weights, which the KL
            term, if any, also uses, as in TRL's importance_sampling_level="sequence").
            Defaults eps 3e-4/4e-4, beta 0.

Stability: the log-ratio is clamped from above at `max_log_ratio` before exp (verl clamps GSPO's at
10, Tunix clamps token ratios at 20): beyond it the term has zero gradient instead of inf/NaN.
Optional dual clip (verl's clip_ratio_c, off by default): for A < 0 the token loss is capped at
-c * A so a huge ratio on a negative-advantage token cannot dominate the update.

KL to the reference (per token, logr = ref_logp - logp; samples are from pi_theta):
k1 = -logr, k2 = logr^2 / 2, k3 = exp(logr) - logr - 1 (Schulman; DeepSeekMath's D_KL, >= 0).
When beta == 0 the reference is not needed (ref_logp_NT may be None; if given, kl is only logged).
`kl_bias_correction=True` multiplies the per-token KL by the (differentiable) ratio r, which makes
its gradient the unbiased reverse-KL gradient under off-policy samples (DeepSeek-V3.2; TRL's
`use_bias_correction_kl`, default True in TRL 1.16). Off by default here: DeepSeekMath / R1 use
the plain k3 term. Even on-policy (r == 1 in value) it changes the gradient by beta*k3*grad(logp).

On-policy "loss ~= 0": with one update per rollout the old policy IS the current one, so
old_logp = stop_gradient(logp) (pass old_logp_NT=None for exactly that): r == 1 in value, no
clipping, and the loss value is -sum_{i,t} w_{i,t} A_i + beta*KL. With group-centred advantages
that is ~0: exactly 0 for grpo/gspo with beta=0 when no sequence is empty (then it is -mean(A));
for dapo/dr_grpo it is a length-weighted mean of -A, small but not 0. The gradient is still
-sum w A grad(logp) + beta grad(KL), the REINFORCE-with-baseline gradient: a ~0 loss value is
expected and not a bug.

Packed rows (r1jax.rl.experience.pack): several completions share a row; `segment_ids_NT`
numbers them within the row (0 = no completion token) and every per-sequence quantity (|o_i|,
GSPO's sequence ratio, the sequence-level importance weight) is a sum over a (row, segment) pair
instead of over a row. Padded rows are the special case of one segment per row (segment id =
mask), so both layouts run the same code and give the same loss; the advantage may then be given
per token ([N, T]) instead of per row ([N]).

Sampler/trainer correction (`is_correction`; verl's rollout_correction, TRL's
vllm_importance_sampling_*). The sampler's log-probs (`sampler_logp_NT`) differ from the
trainer's (other shapes, other kernels, bf16 caches). rho = p_trainer / p_sampler, where
p_trainer is the old policy's log-prob when given (several minibatches or epochs) and otherwise
stop_gradient of the current one (one update per rollout): a constant weight on each token's
(or each sequence's) policy-gradient term, never on the KL term, never in the normalisers.
- "tis": truncated IS, weight clip(rho, is_threshold_low, is_threshold): defaults token level,
  C = is_threshold = 2.0 (verl algorithm.rollout_correction.rollout_is=token with
  rollout_is_threshold=2.0, applied as .clamp(max=C)), no lower bound.
- "mis": masked IS, weight 1 if is_threshold_low <= rho <= is_threshold else 0: defaults
  sequence level, band [0, 3.0] (TRL GRPOConfig vllm_importance_sampling_mode="sequence_mask",
  vllm_importance_sampling_clip_max=3.0, clip_min=None).
Token level: rho_t = exp(trainer_t - sampler_t); sequence level: rho_i = exp(sum_t (trainer_t -
sampler_t)), the product over the sequence's tokens as in verl and TRL (so long completions
drift furthest from 1), applied to all its tokens; log rho is clamped to [-20, 20] (verl). GSPO's
policy term is per sequence, so it takes only the sequence level. A masked token still counts in
the normaliser (as in TRL: its term is multiplied by 0), so masking shrinks the update rather
than re-weighting the surviving tokens. Metrics is_ratio_mean / _max / _min (rho over tokens or
sequences) and is_masked_frac (the share whose weight the correction changed: dropped by mis,
truncated by tis).
Overlong filtering (DAPO: truncated completions dropped from the loss; r1jax has no switch
for it yet: it would zero their `mask_NT`) acts before all this: a filtered completion's tokens
are not in `mask_NT`, so they enter neither a sequence ratio nor the metrics. Without it, the
truncated completions are the longest, whose sequence-level ratio (a product over up to
max_new_tokens tokens) strays furthest, so sequence-level mis drops them first: it then acts as
a length-biased filter and the masked share grows with response length; token-level tis/mis
does not depend on length. DAPO's soft overlong penalty is a reward and does not interact.
Measured on the embedded run (benchmarks/RESULTS.md): in fp32 sampler and trainer agree to
~1e-7 per token; with bf16 compute and a bf16 KV cache, |log rho| is 4e-4 on average and at
most 0.46 per token, and rho peaked at 1.26 per token and 1.37 per (<= 64-token) sequence. The
default thresholds (2; [0, 3]) never act there: tis only multiplies each term by rho, and mis
leaves the run bit-identical to none; a [0.95, 1.05] band masks 0-12% of the sequences.

Metrics: `policy_loss` returns {name: (numerator, denominator)} whose entries add up exactly across
micro-batches (`merge_metrics`; maxima/minima merge by max/min) and `finalize_metrics` turns them
into values. All math is float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from numbers import Real

import jax
import jax.numpy as jnp

from r1jax import registry

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "gspo")
KL_ESTIMATORS = ("k1", "k2", "k3")
IS_CORRECTIONS = ("none", "tis", "mis")
IS_LEVELS = ("token", "sequence")
MAX_IS_LOG_RATIO = 20.0  # verl bounds importance weights to [exp(-20), exp(20)]

# Defaults of the sampler/trainer correction (module docstring: verl for tis, TRL for mis).
IS_DEFAULTS = {
    "tis": dict(is_level="token", is_threshold=2.0, is_threshold_low=0.0),
    "mis": dict(is_level="sequence", is_threshold=3.0, is_threshold_low=0.0),
}

# Per-variant defaults for the fields left as None in LossConfig.
VARIANT_DEFAULTS = {
    "grpo": dict(epsilon_low=0.2, epsilon_high=0.2, beta=0.04, max_log_ratio=20.0),
    "dr_grpo": dict(epsilon_low=0.2, epsilon_high=0.2, beta=0.0, max_log_ratio=20.0),
    "dapo": dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.0, max_log_ratio=20.0),
    "gspo": dict(epsilon_low=3e-4, epsilon_high=4e-4, beta=0.0, max_log_ratio=10.0),
}


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss settings; fields left None take the defaults of `loss_type` (VARIANT_DEFAULTS).

    Hashable, so it can be a static argument of jax.jit.
    """

    loss_type: str = "grpo"
    epsilon_low: float | None = None  # ratio clipped below at 1 - epsilon_low
    epsilon_high: float | None = None  # ratio clipped above at 1 + epsilon_high
    beta: float | None = None  # KL-to-reference coefficient in the loss
    kl_estimator: str = "k3"
    dual_clip: float | None = None  # c > 1 caps the loss of A < 0 terms at -c*A; None = off
    max_log_ratio: float | None = None  # upper clamp of the log-ratio before exp
    kl_bias_correction: bool = False  # KL term times the ratio (DeepSeek-V3.2 / TRL)
    is_correction: str = "none"  # sampler/trainer correction: none | tis | mis
    is_level: str | None = None  # token | sequence (default: IS_DEFAULTS)
    is_threshold: float | None = None  # tis: the cap C; mis: the band's upper end
    is_threshold_low: float | None = None  # tis: lower clamp; mis: the band's lower end

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(
                f"LossConfig.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"LossConfig.kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}"
            )
        for name, value in VARIANT_DEFAULTS[self.loss_type].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name in ("epsilon_low", "epsilon_high", "beta"):
            v = getattr(self, name)
            if not isinstance(v, Real) or not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"LossConfig.{name} must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not isinstance(self.max_log_ratio, Real) or not self.max_log_ratio > 0:
            raise ValueError(f"LossConfig.max_log_ratio must be > 0, got {self.max_log_ratio!r}")
        if self.dual_clip is not None and not (
            isinstance(self.dual_clip, Real) and self.dual_clip > 1
        ):
            raise ValueError(f"LossConfig.dual_clip must be None or > 1, got {self.dual_clip!r}")
        self._check_is()

    def _check_is(self):
        if self.is_correction not in IS_CORRECTIONS:
            raise ValueError(
                f"LossConfig.is_correction must be one of {IS_CORRECTIONS}, "
                f"got {self.is_correction!r}"
            )
        if self.is_correction == "none":
            return
        for name, value in IS_DEFAULTS[self.is_correction].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.is_level not in IS_LEVELS:
            raise ValueError(
                f"LossConfig.is_level must be one of {IS_LEVELS}, got {self.is_level!r}"
            )
        hi, lo = self.is_threshold, self.is_threshold_low
        if not isinstance(hi, Real) or not (1.0 <= hi < math.inf):
            raise ValueError(f"LossConfig.is_threshold must be a finite number >= 1, got {hi!r}")
        if not isinstance(lo, Real) or not (0.0 <= lo <= 1.0):
            raise ValueError(f"LossConfig.is_threshold_low must be in [0, 1], got {lo!r}")
        if self.loss_type == "gspo" and self.is_level != "sequence":
            raise ValueError(
                "LossConfig.is_level: gspo's policy term is per sequence; use is_level='sequence'"
            )


def loss_config_from(cfg) -> LossConfig:
    """LossConfig from a LossConfig, a Mapping, or any object with attributes (ConfigDict,
    dataclass). Reads only LossConfig's field names; missing or None fields take the defaults."""
    if isinstance(cfg, LossConfig):
        return cfg
    if cfg is None:
        return LossConfig()
    kwargs = {}
    for f in dataclasses.fields(LossConfig):
        v = cfg.get(f.name) if isinstance(cfg, Mapping) else getattr(cfg, f.name, None)
        if v is not None:
            kwargs[f.name] = v
    return LossConfig(**kwargs)


def get_policy_loss(name: str = ""):
    """The policy-loss function a config names (config.rl.policy_loss): "" is `policy_loss`
    (every LOSS_TYPES variant); "package.module:function" is a user's function with the same
    signature and return value (loss_sum, {name: (numerator, denominator)}), weighted by
    `token_weights` of config.rl.loss_type."""
    return policy_loss if not name else registry.load(name, f"config.rl.policy_loss {name!r}")


def segment_totals(x_NT, segment_ids_NT):
    """Each token's sum of x over its (row, segment): [N, T]. Segment ids are < T + 1."""
    n, t = x_NT.shape
    ids = jnp.arange(n)[:, None] * (t + 1) + segment_ids_NT
    tot = jax.ops.segment_sum(x_NT.ravel(), ids.ravel(), num_segments=n * (t + 1))
    return tot[ids]


def token_weights(
    mask_NT, loss_type, *, max_len=None, num_sequences=None, num_tokens=None, segment_ids_NT=None
):
    """Per-token loss weights [N, T] float32 for the WHOLE minibatch (slice them per micro-batch).

    loss_type: a name in LOSS_TYPES, or a config accepted by `loss_config_from`.
    max_len: the constant of dr_grpo (required there; TRL's max_completion_length).
    num_sequences / num_tokens: global counts to use instead of this array's (e.g. when each data
      shard computes its own weights); default: N and mask.sum() of mask_NT. Packed rows must
      give num_sequences (a row holds several sequences, or none).
    segment_ids_NT: packed rows' segment ids (module docstring); None: one sequence per row.
    As in TRL, a sequence with no unmasked token still counts in N for grpo/gspo/dr_grpo (it
    contributes 0 to the sum), so masking truncated completions shrinks the loss, not re-weights it.
    """
    lt = loss_type if isinstance(loss_type, str) else loss_config_from(loss_type).loss_type
    if lt not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {lt!r}")
    mask_NT = jnp.asarray(mask_NT)
    if mask_NT.ndim != 2:
        raise ValueError(f"mask_NT must be [N, T], got shape {mask_NT.shape}")
    m = mask_NT.astype(jnp.float32)
    n = m.shape[0] if num_sequences is None else num_sequences
    if lt in ("grpo", "gspo"):
        if segment_ids_NT is None:
            return m / (jnp.maximum(m.sum(-1, keepdims=True), 1.0) * n)
        seg = jnp.where(mask_NT > 0, segment_ids_NT, 0)
        return m / (jnp.maximum(segment_totals(m, seg), 1.0) * n)
    if lt == "dr_grpo":
        if max_len is None:
            raise ValueError("token_weights: max_len is required for loss_type='dr_grpo'")
        return m / (n * float(max_len))
    total = m.sum() if num_tokens is None else num_tokens
    return m / jnp.maximum(total, 1.0)


def kl_estimate(logp, ref_logp, estimator: str = "k3"):
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta."""
    logr = ref_logp - logp
    if estimator == "k1":
        return -logr
    if estimator == "k2":
        return 0.5 * logr**2
    if estimator == "k3":
        return jnp.exp(logr) - logr - 1.0
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def _check(name, x, shape):
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"policy_loss: {name} has shape {tuple(x.shape)}, expected {tuple(shape)}")


def importance_weights(trainer_NT, sampler_NT, m, seg, c):
    """(weight [N, T] on each token's policy-gradient term, metrics) of the sampler/trainer
    correction `c.is_correction` (module docstring). m: bool loss mask; seg: segment ids."""
    f32 = jnp.float32
    mf = m.astype(f32)
    log_rho = jnp.where(m, jax.lax.stop_gradient(trainer_NT) - sampler_NT.astype(f32), 0.0)
    unit = mf  # each token counts once in the metrics; at sequence level each sequence does
    if c.is_level == "sequence":
        log_rho = segment_totals(log_rho, seg)
        unit = mf / jnp.maximum(segment_totals(mf, seg), 1.0)
    rho = jnp.exp(jnp.clip(log_rho, -MAX_IS_LOG_RATIO, MAX_IS_LOG_RATIO))
    lo, hi = c.is_threshold_low, c.is_threshold
    if c.is_correction == "tis":
        w, changed = jnp.clip(rho, lo, hi), (rho > hi) | (rho < lo)
    else:
        keep = (rho >= lo) & (rho <= hi)
        w, changed = keep.astype(f32), ~keep
    cnt = unit.sum()
    metrics = {
        "is_ratio_mean": ((unit * rho).sum(), cnt),
        "is_ratio_max": (jnp.where(m, rho, -jnp.inf).max(), cnt),
        "is_ratio_min": (jnp.where(m, rho, jnp.inf).min(), cnt),
        "is_masked_frac": ((unit * changed).sum(), cnt),
    }
    return jnp.where(m, w, 0.0), metrics


def policy_loss(
    logp_NT,
    old_logp_NT,
    ref_logp_NT,
    adv_N,
    mask_NT,
    weight_NT,
    cfg,
    *,
    segment_ids_NT=None,
    sampler_logp_NT=None,
):
    """Returns (loss_sum, metrics_sums) for this (micro-)batch; see the module docstring.

    logp_NT: current-policy log-probs of the sampled tokens (differentiated).
    old_logp_NT: behaviour-policy log-probs, or None for on-policy (stop_gradient(logp_NT)).
    ref_logp_NT: reference log-probs, or None (only allowed when beta == 0).
    adv_N: per-sequence advantage [N], or per token [N, T] (packed rows).
    mask_NT: 1 on completion tokens that count.
    weight_NT: the matching slice of `token_weights(...)` of the full minibatch.
    cfg: LossConfig or anything `loss_config_from` accepts.
    segment_ids_NT: packed rows' segment ids; None: one sequence per row.
    sampler_logp_NT: the sampler's log-probs; required when cfg.is_correction is not "none".
    """
    c = loss_config_from(cfg)
    shape = logp_NT.shape
    if len(shape) != 2:
        raise ValueError(f"policy_loss: logp_NT must be [N, T], got shape {tuple(shape)}")
    if old_logp_NT is None:
        old_logp_NT = jax.lax.stop_gradient(logp_NT)
    for name, x in (("old_logp_NT", old_logp_NT), ("mask_NT", mask_NT), ("weight_NT", weight_NT)):
        _check(name, x, shape)
    if tuple(adv_N.shape) != tuple(shape):
        _check("adv_N", adv_N, shape[:1])
    for name, x in (("ref_logp_NT", ref_logp_NT), ("segment_ids_NT", segment_ids_NT)):
        if x is not None:
            _check(name, x, shape)
    if ref_logp_NT is None and c.beta > 0:
        raise ValueError(f"policy_loss: ref_logp_NT is None but beta={c.beta} > 0")
    if c.is_correction != "none":
        if sampler_logp_NT is None:
            raise ValueError(
                f"policy_loss: is_correction={c.is_correction!r} needs sampler_logp_NT"
            )
        _check("sampler_logp_NT", sampler_logp_NT, shape)

    f32 = jnp.float32
    m = mask_NT.astype(bool)
    mf = m.astype(f32)
    seg = m.astype(jnp.int32) if segment_ids_NT is None else jnp.where(m, segment_ids_NT, 0)
    # Zero padded positions first so garbage (inf/NaN) there cannot leak into values or grads.
    logp = jnp.where(m, logp_NT.astype(f32), 0.0)
    old = jnp.where(m, old_logp_NT.astype(f32), 0.0)
    w_NT = jnp.where(m, weight_NT.astype(f32), 0.0)
    a = jnp.broadcast_to(adv_N.astype(f32).reshape(shape[0], -1), shape)
    a = jnp.where(m, a, 0.0)

    # Every quantity is per token; GSPO's sequence ratio is broadcast to its sequence's tokens, so
    # sum_t w_t * pg_i = (sum_t w_t) * pg_i: the sequence's weight times its one term.
    log_ratio = logp - old
    unit = mf  # what a metric counts once: a token, or (GSPO) a sequence
    if c.loss_type == "gspo":
        len_NT = segment_totals(mf, seg)
        log_ratio = segment_totals(log_ratio, seg) / jnp.maximum(len_NT, 1.0)
        unit = mf / jnp.maximum(len_NT, 1.0)
    ratio = jnp.exp(jnp.minimum(log_ratio, c.max_log_ratio))
    lo, hi = 1.0 - c.epsilon_low, 1.0 + c.epsilon_high
    pg = -jnp.minimum(ratio * a, jnp.clip(ratio, lo, hi) * a)
    clip_low = m & (ratio < lo) & (a < 0)
    clip_high = m & (ratio > hi) & (a > 0)
    if c.dual_clip is not None:
        dual = m & (a < 0) & (pg > -c.dual_clip * a)
        pg = jnp.where(dual, -c.dual_clip * a, pg)
    else:
        dual = jnp.zeros_like(clip_low)
    metrics = {}
    if c.is_correction != "none":
        is_w, metrics = importance_weights(old, sampler_logp_NT, m, seg, c)
        pg = pg * is_w
    pg_sum = (w_NT * pg).sum()
    loss = pg_sum

    cnt = unit.sum()
    one = jnp.ones((), f32)
    metrics |= {
        "pg_loss": (pg_sum, one),
        "clip_frac": ((unit * (clip_low | clip_high)).sum(), cnt),
        "clip_frac_low": ((unit * clip_low).sum(), cnt),
        "clip_frac_high": ((unit * clip_high).sum(), cnt),
        "dual_clip_frac": ((unit * dual).sum(), cnt),
        "ratio_mean": ((unit * ratio).sum(), cnt),
        "ratio_max": (jnp.where(m, ratio, -jnp.inf).max(), cnt),
        "ratio_min": (jnp.where(m, ratio, jnp.inf).min(), cnt),
    }
    if ref_logp_NT is not None:
        ref = jnp.where(m, ref_logp_NT.astype(f32), 0.0)
        kl_NT = jnp.where(m, kl_estimate(logp, ref, c.kl_estimator), 0.0)
        if c.kl_bias_correction:  # importance-weighted: also the logged value, as in TRL
            kl_NT = kl_NT * ratio
        metrics["kl"] = ((mf * kl_NT).sum(), mf.sum())
        if c.beta > 0:
            kl_pen = c.beta * (w_NT * kl_NT).sum()
            loss = loss + kl_pen
            metrics["kl_penalty"] = (kl_pen, one)
    metrics["loss"] = (loss, one)
    return loss, metrics


# Metrics whose value is the accumulated numerator itself (already normalised by the weights).
_TOTALS = ("loss", "pg_loss", "kl_penalty")


def _kind(name):
    if name in _TOTALS:
        return "total"
    if name.endswith("_max"):
        return "max"
    if name.endswith("_min"):
        return "min"
    return "mean"


def merge_metrics(a, b):
    """Accumulates two metrics_sums dicts (same keys): sums, except *_max / *_min by max / min."""
    out = {}
    for k, (an, ad) in a.items():
        bn, bd = b[k]
        kind = _kind(k)
        if kind == "max":
            n = jnp.maximum(an, bn)
        elif kind == "min":
            n = jnp.minimum(an, bn)
        else:
            n = an + bn
        out[k] = (n, ad + bd)
    return out


def finalize_metrics(metrics):
    """{name: value}. Leaves may carry leading axes (e.g. micro-batches stacked by lax.scan): they
    are reduced first. Means with a zero denominator (no tokens) give 0."""
    out = {}
    for k, (n, d) in metrics.items():
        n, d = jnp.asarray(n, jnp.float32), jnp.asarray(d, jnp.float32)
        kind = _kind(k)
        n = n.max() if kind == "max" else n.min() if kind == "min" else n.sum()
        d = d.sum()
        if kind == "total":
            out[k] = n
        elif kind == "mean":
            out[k] = jnp.where(d > 0, n / jnp.where(d > 0, d, 1.0), 0.0)
        else:
            out[k] = jnp.where(d > 0, n, 0.0)
    return out
