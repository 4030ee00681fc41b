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


def token_weights(mask_NT, loss_type, *, max_len=None, num_sequences=None, num_tokens=None):
    """Per-token loss weights [N, T] float32 for the WHOLE minibatch (slice them per micro-batch).

    loss_type: a name in LOSS_TYPES, or a config accepted by `loss_config_from`.
    max_len: the constant of dr_grpo (required there; TRL's max_completion_length).
    num_sequences / num_tokens: global counts to use instead of this array's (e.g. when each data
      shard computes its own weights); default: N and mask.sum() of mask_NT.
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
        return m / (jnp.maximum(m.sum(-1, keepdims=True), 1.0) * n)
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


def policy_loss(logp_NT, old_logp_NT, ref_logp_NT, adv_N, mask_NT, weight_NT, cfg):
    """Returns (loss_sum, metrics_sums) for this (micro-)batch; see the module docstring.

    logp_NT: current-policy log-probs of the sampled tokens (differentiated).
    old_logp_NT: behaviour-policy log-probs, or None for on-policy (stop_gradient(logp_NT)).
    ref_logp_NT: reference log-probs, or None (only allowed when beta == 0).
    adv_N: per-sequence advantage. mask_NT: 1 on completion tokens that count.
    weight_NT: the matching slice of `token_weights(...)` of the full minibatch.
    cfg: LossConfig or anything `loss_config_from` accepts.
    """
    c = loss_config_from(cfg)
    shape = logp_NT.shape
    if len(shape) != 2:
        raise ValueError(f"policy_loss: logp_NT must be [N, T], got shape {tuple(shape)}")
    if old_logp_NT is None:
        old_logp_NT = jax.lax.stop_gradient(logp_NT)
    for name, x in (("old_logp_NT", old_logp_NT), ("mask_NT", mask_NT), ("weight_NT", weight_NT)):
        _check(name, x, shape)
    _check("adv_N", adv_N, shape[:1])
    if ref_logp_NT is not None:
        _check("ref_logp_NT", ref_logp_NT, shape)
    elif c.beta > 0:
        raise ValueError(f"policy_loss: ref_logp_NT is None but beta={c.beta} > 0")

    f32 = jnp.float32
    m = mask_NT.astype(bool)
    mf = m.astype(f32)
    # Zero padded positions first so garbage (inf/NaN) there cannot leak into values or grads.
    logp = jnp.where(m, logp_NT.astype(f32), 0.0)
    old = jnp.where(m, old_logp_NT.astype(f32), 0.0)
    w_NT = jnp.where(m, weight_NT.astype(f32), 0.0)
    adv = adv_N.astype(f32)

    if c.loss_type == "gspo":
        len_N = mf.sum(-1)
        log_ratio = (logp - old).sum(-1) / jnp.maximum(len_N, 1.0)
        unit_w, unit_mask, a = w_NT.sum(-1), len_N > 0, adv
    else:
        log_ratio = logp - old
        unit_w, unit_mask, a = w_NT, m, adv[:, None]
    ratio = jnp.exp(jnp.minimum(log_ratio, c.max_log_ratio))
    lo, hi = 1.0 - c.epsilon_low, 1.0 + c.epsilon_high
    pg = -jnp.minimum(ratio * a, jnp.clip(ratio, lo, hi) * a)
    clip_low = unit_mask & (ratio < lo) & (a < 0)
    clip_high = unit_mask & (ratio > hi) & (a > 0)
    if c.dual_clip is not None:
        dual = unit_mask & (a < 0) & (pg > -c.dual_clip * a)
        pg = jnp.where(dual, -c.dual_clip * a, pg)
    else:
        dual = jnp.zeros_like(clip_low)
    pg_sum = (unit_w * pg).sum()
    loss = pg_sum

    um = unit_mask.astype(f32)
    cnt = um.sum()
    one = jnp.ones((), f32)
    metrics = {
        "pg_loss": (pg_sum, one),
        "clip_frac": ((clip_low | clip_high).astype(f32).sum(), cnt),
        "clip_frac_low": (clip_low.astype(f32).sum(), cnt),
        "clip_frac_high": (clip_high.astype(f32).sum(), cnt),
        "dual_clip_frac": (dual.astype(f32).sum(), cnt),
        "ratio_mean": ((um * ratio).sum(), cnt),
        "ratio_max": (jnp.where(unit_mask, ratio, -jnp.inf).max(), cnt),
        "ratio_min": (jnp.where(unit_mask, ratio, jnp.inf).min(), cnt),
    }
    if ref_logp_NT is not None:
        ref = jnp.where(m, ref_logp_NT.astype(f32), 0.0)
        kl_NT = jnp.where(m, kl_estimate(logp, ref, c.kl_estimator), 0.0)
        if c.kl_bias_correction:  # importance-weighted: also the logged value, as in TRL
            kl_NT = kl_NT * (ratio[:, None] if c.loss_type == "gspo" else ratio)
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
