"""Logit distillation: a student trained to match a frozen teacher's next-token distributions.

  a stage of `python launch/distill.py --config=configs/distill.py:mode=logits ...`
  (r1jax/stages/pipeline.py run_distillation), or alone: stages.distill.run(config.logit, dir)

Loss, per completion token t of the SFT data (the same packed rows as r1jax/sft.py):
  KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v)),  p = softmax(logits / temperature),
averaged over all target tokens of the minibatch (exact under micro-batching) and multiplied by
temperature^2 (Hinton et al.), so gradients keep their scale across temperatures; the logged
`kl` is the plain mean. The teacher's logits are computed on the fly by its own model (its own
ModelConfig and params, no gradient) and both distributions are built in vocabulary chunks with
an online logsumexp, so no [N, T, V] tensor exists (memory O(N T chunk)).

The two tokenizers must be identical (same ids for the same text): `check_same_tokenizer`
compares vocabulary sizes, special ids and the encodings / decodings of a probe set before any
model is loaded, and names what differs. The distributions run over the tokenizer's ids
[0, vocab_size); embedding rows past it (padding, e.g. 152,064 vs 151,936 in Qwen2.5) are never
produced and are left out of both.

R1 itself distils by SFT on teacher traces ("trace distillation", r1_paper.md §4): build the
data with the rejection stage and train with the SFT stage; this module is the logit variant.
Held-out evaluation reports the KL and both models' next-token NLL on the same targets.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import distributed, files, loop, optim, update
from r1jax import sharding as shd
from r1jax.data import packing
from r1jax.errors import ConfigError
from r1jax.models import store
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig
from r1jax.tokenizer import load_tokenizer

f32 = jnp.float32

PROBES = (
    "Hello, world!",
    "  two leading spaces, two trailing  ",
    "Compute 17 + 8 + 25. 17 + 8 = 25. 25 + 25 = 50.",
    "<think> reasoning </think> <answer> 42 </answer>",
    "\\boxed{\\frac{1}{2}} and $x^2 - 3x + 2 = 0$",
    "def f(x):\n    return x ** 2\n",
    "数学：一加一等于二。",
    "naïve café, déjà vu — ½ ≠ 0.5?",
    "<|im_start|>user\nhi<|im_end|>\n",
    "\n\n\t\n",
)


# ----------------------------------------------------------------------------- tokenizers


def tokenizer_differences(student, teacher, probes=PROBES, max_ids: int = 512) -> list[str]:
    """What differs between two tokenizers (empty when they agree on everything probed)."""
    diffs = []

    def cmp(what, a, b):
        if a != b:
            diffs.append(f"{what}: student {a!r}, teacher {b!r}")

    cmp("vocab_size", student.vocab_size, teacher.vocab_size)
    for attr in ("bos_id", "eos_ids", "pad_id"):
        cmp(attr, getattr(student, attr), getattr(teacher, attr))
    cmp("special_tokens", dict(student.special_tokens), dict(teacher.special_tokens))
    for text in probes:
        a, b = student.encode_prompt(text), teacher.encode_prompt(text)
        cmp(f"encode({text!r})", a, b)
        if a == b:
            cmp(f"decode(encode({text!r}))", student.decode(a), teacher.decode(b))
    V = min(student.vocab_size, teacher.vocab_size)
    for i in range(0, V, max(1, V // max_ids)):
        cmp(f"decode([{i}])", student.decode([i], False), teacher.decode([i], False))
    return diffs


def check_same_tokenizer(student, teacher, student_path: str = "", teacher_path: str = ""):
    """Raises ValueError naming up to 8 differences when the tokenizers are not identical."""
    diffs = tokenizer_differences(student, teacher)
    if diffs:
        shown = "\n  - ".join(diffs[:8]) + (f"\n  ... ({len(diffs)} in all)" if diffs[8:] else "")
        raise ValueError(
            f"the teacher's tokenizer ({teacher_path or '?'}) differs from the student's "
            f"({student_path or '?'}); logit distillation needs the same token ids:\n  - {shown}"
        )


# ------------------------------------------------------------------------------------ the KL


def kl_from_logits(z_t, z_s, temperature: float = 1.0):
    """KL(softmax(z_t / T) || softmax(z_s / T)) over the last axis, directly (small V)."""
    lt = jax.nn.log_softmax(z_t.astype(f32) / temperature, axis=-1)
    ls = jax.nn.log_softmax(z_s.astype(f32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)


def token_kl(h_s, w_s, h_t, w_t, *, temperature: float = 1.0, vocab_chunk: int = 8192):
    """KL(p_T || p_S) [n, T] from hidden states h [n, T, D*] and unembeddings w [V, D*].

    p_T comes from (h_t, w_t) and gets no gradient. Over chunks of the vocabulary with online
    logsumexps for both models, each chunk rematerialised in the backward pass:
      KL = sum_v e_v (z_T - z_S)_v / s_T - logZ_T + logZ_S,  e_v = exp(z_T,v - m_T), s_T = sum e.
    """
    h_t, w_t = jax.lax.stop_gradient(h_t), jax.lax.stop_gradient(w_t)
    V = w_s.shape[0]
    if w_t.shape[0] != V:
        raise ValueError(f"student unembedding has {V} rows, the teacher's {w_t.shape[0]}")

    def logits(h, w):
        return jnp.einsum("ntd,vd->ntv", h, w.astype(h.dtype), preferred_element_type=f32)

    if V <= vocab_chunk:
        return kl_from_logits(logits(h_t, w_t), logits(h_s, w_s), temperature)

    n_chunks = -(-V // vocab_chunk)

    def chunked(w):
        w = jnp.pad(w, ((0, n_chunks * vocab_chunk - V), (0, 0)))
        return w.reshape(n_chunks, vocab_chunk, -1)

    @jax.checkpoint
    def step(carry, xs):
        m_t, s_t, a, m_s, s_s = carry
        ws, wt, c = xs
        valid = c * vocab_chunk + jnp.arange(vocab_chunk) < V
        zt = jnp.where(valid, logits(h_t, wt) / temperature, tfm.NEG_INF)
        zs = jnp.where(valid, logits(h_s, ws) / temperature, tfm.NEG_INF)
        m_t_new, m_s_new = jnp.maximum(m_t, zt.max(-1)), jnp.maximum(m_s, zs.max(-1))
        e_t = jnp.exp(zt - m_t_new[..., None])
        scale = jnp.exp(m_t - m_t_new)
        s_t = s_t * scale + e_t.sum(-1)
        a = a * scale + (e_t * jnp.where(valid, zt - zs, 0.0)).sum(-1)
        s_s = s_s * jnp.exp(m_s - m_s_new) + jnp.exp(zs - m_s_new[..., None]).sum(-1)
        return (m_t_new, s_t, a, m_s_new, s_s), None

    shape = h_s.shape[:-1]
    neg, zero = jnp.full(shape, tfm.NEG_INF, f32), jnp.zeros(shape, f32)
    xs = (chunked(w_s), chunked(w_t), jnp.arange(n_chunks))
    (m_t, s_t, a, m_s, s_s), _ = jax.lax.scan(step, (neg, zero, zero, neg, zero), xs)
    return a / s_t - (m_t + jnp.log(s_t)) + (m_s + jnp.log(s_s))


def distill_terms(
    params,
    teacher_params,
    batch,
    cfg: ModelConfig,
    teacher_cfg: ModelConfig,
    *,
    vocab_size: int,
    temperature: float = 1.0,
    vocab_chunk: int = 8192,
):
    """(KL at each next-token position [n, S-1], target mask [n, S-1]) for one micro-batch."""
    args = (batch["tokens"], batch["positions"], batch["segment_ids"])
    h_s = tfm.forward(params, *args, cfg)[:, :-1]
    h_t = tfm.forward(teacher_params, *args, teacher_cfg)[:, :-1]
    w_s = tfm.unembed_matrix(params, cfg)[:vocab_size]
    w_t = tfm.unembed_matrix(teacher_params, teacher_cfg)[:vocab_size]
    kl = token_kl(h_s, w_s, h_t, w_t, temperature=temperature, vocab_chunk=vocab_chunk)
    same = batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]
    return kl, (batch["target"][:, 1:] > 0) & same


def distill_loss(params, mb, ctx, teacher_params, *, t2, **kw):
    kl, m = distill_terms(params, teacher_params, mb, **kw)
    return t2 * jnp.where(m, kl, 0.0).sum() / ctx["tokens"], {}


def eval_terms(params, mb, teacher_params, *, cfg, teacher_cfg, vocab_chunk, **kw):
    """Held-out sums: KL, and the student's and teacher's NLL of the targets."""
    kl, m = distill_terms(
        params, teacher_params, mb, cfg, teacher_cfg, vocab_chunk=vocab_chunk, **kw
    )
    cnt = m.sum().astype(f32)
    out = {"kl": (jnp.where(m, kl, 0.0).sum(), cnt)}
    for name, p, c in (("student_nll", params, cfg), ("teacher_nll", teacher_params, teacher_cfg)):
        logp, _ = packing.nll_terms(p, mb, cfg=c, vocab_chunk=vocab_chunk)
        out[name] = (-jnp.where(m, logp, 0.0).sum(), cnt)
    return out


# ----------------------------------------------------------------------------------- the stage


def _tokenizer_dirs(config) -> tuple[str, str]:
    """(student, teacher) tokenizer directories, found without loading any model."""
    t_init = config.teacher.get("init", "")
    if not t_init:
        raise ConfigError("config.teacher.init: logit distillation needs a teacher model directory")
    t_dir = config.teacher_tokenizer.get("path") or store.tokenizer_path(t_init)
    if not t_dir:
        raise ConfigError(f"config.teacher: {t_init} has no tokenizer; set teacher_tokenizer.path")
    s_dir = config.tokenizer.get("path", "")
    if not s_dir and config.model.get("init", ""):
        s_dir = store.tokenizer_path(config.model.init)
    return s_dir or t_dir, t_dir  # a student from scratch uses the teacher's tokenizer


def run(config, workdir) -> dict:
    """Trains the student on KL(teacher || student); writes WORKDIR/model."""
    c = config
    s_dir, t_dir = _tokenizer_dirs(c)
    tok, t_tok = load_tokenizer(s_dir), load_tokenizer(t_dir)
    check_same_tokenizer(tok, t_tok, s_dir, t_dir)
    mesh = shd.make_mesh(c.mesh)
    update.check_batch(mesh, c.batch_size, c.micro_batch)
    t_cfg, t_params, _ = store.load_or_init(c.teacher, mesh)
    cfg, params, _ = store.load_or_init(c.model, mesh, vocab_size=t_cfg.vocab_size, seed=c.seed)
    V = tok.vocab_size
    for who, mc in (("model", cfg), ("teacher", t_cfg)):
        if mc.vocab_size < V:
            raise ConfigError(f"config.{who}: {mc.vocab_size} embedding rows < {V} tokenizer ids")
    kl_kw = dict(vocab_size=V, temperature=float(c.distill.temperature), vocab_chunk=c.vocab_chunk)
    ids = packing.encode_examples(packing.load_examples(c.data), tok)
    n_eval = int(len(ids) * c.data.eval_fraction)
    kw = dict(pad_id=tok.pad_id, loss_on_prompt=c.data.loss_on_prompt)
    rows = packing.pack(ids[n_eval:], c.row_len, **kw)
    eval_rows = packing.pad_rows(packing.pack(ids[:n_eval], c.row_len, **kw), c.micro_batch)
    c.optim.total_steps = c.optim.total_steps or c.steps
    optimizer, schedule = optim.make_optimizer(c.optim)
    state = update.init_state(params, optimizer, mesh)
    data = update.RowBatches(rows, c.batch_size, c.micro_batch, mesh, seed=c.seed)
    t_sh = update.shardings_of(t_params)
    fns = {}

    def step(i, state):
        batch, sh = data.next()
        if "train" not in fns:
            fns["train"] = update.make_train_step(
                functools.partial(
                    distill_loss, t2=kl_kw["temperature"] ** 2, cfg=cfg, teacher_cfg=t_cfg, **kl_kw
                ),
                optimizer,
                state_shardings=update.shardings_of(state),
                batch_shardings=sh,
                frozen_shardings=(t_sh,),
                prepare=packing.count_targets,
            )
        state, m = fns["train"](state, batch, t_params)
        m = {f"train/{k}": v for k, v in m.items()}
        m["train/kl"] = m["train/loss"] / kl_kw["temperature"] ** 2
        m["train/lr"] = schedule(max(int(distributed.fetch(state["step"])) - 1, 0))
        return state, m, []

    def evaluate(i, state):
        batch, sh = update.put_table(mesh, eval_rows, c.micro_batch)
        if "eval" not in fns:
            fns["eval"] = update.make_scorer(
                functools.partial(eval_terms, cfg=cfg, teacher_cfg=t_cfg, **kl_kw),
                param_shardings=update.shardings_of(state["params"]),
                batch_shardings=sh,
                arg_shardings=(t_sh,),
                rows=False,
            )
        m = update.ratios(fns["eval"](state["params"], batch, t_params))
        return {f"eval/{k}": v for k, v in m.items()}, []

    def finish(state):
        store.save_model(files.path(workdir) / "model", state["params"], cfg, s_dir)

    r = loop.Run("distill", state, step, data, evaluate if n_eval else None, finish)
    r.postfix = ("train/kl",)
    return loop.run(c, workdir, r)
