"""Logit distillation: a student trained to match a frozen teacher's next-token distributions.

  python launch/distill.py --config=configs/distill.py:student=DIR,teacher=DIR,data=FILE \\
      --workdir=DIR

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
data with r1jax/rejection.py and train with r1jax/sft.py; this module is the logit variant.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from r1jax import optim
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

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
        a, b = student.encode(text, add_bos=True), teacher.encode(text, add_bos=True)
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


def _target_count(batch):
    same = batch["segment_ids"][..., 1:] == batch["segment_ids"][..., :-1]
    return ((batch["target"][..., 1:] > 0) & same).sum()


def make_distill_step(
    cfg: ModelConfig,
    teacher_cfg: ModelConfig,
    optimizer,
    *,
    state_shardings,
    teacher_shardings,
    batch_shardings,
    **kl_kw,
):
    """Jitted fn(state, teacher_params, batch [n_micro, micro, S]) -> (state, metrics).

    kl_kw: vocab_size, temperature, vocab_chunk (see distill_terms). state is donated.
    """
    t2 = kl_kw.get("temperature", 1.0) ** 2

    def micro_loss(params, teacher_params, mb, total):
        kl, m = distill_terms(params, teacher_params, mb, cfg, teacher_cfg, **kl_kw)
        return t2 * jnp.where(m, kl, 0.0).sum() / total

    grad_fn = jax.value_and_grad(micro_loss)

    def step(state, teacher_params, batch):
        params = state["params"]
        total = jnp.maximum(_target_count(batch), 1).astype(f32)

        def acc(carry, mb):
            loss, g = grad_fn(params, teacher_params, mb, total)
            return (carry[0] + loss, jax.tree.map(jnp.add, carry[1], g)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, f32), params)
        (loss, grads), _ = jax.lax.scan(acc, (jnp.zeros((), f32), zeros), batch)
        new_state, m = optim.apply_if_finite(state, grads, loss, optimizer)
        return new_state, {"loss": loss, "kl": loss / t2, "tokens": total, **m}

    return jax.jit(
        step,
        in_shardings=(state_shardings, teacher_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )


def make_eval_kl(cfg: ModelConfig, teacher_cfg: ModelConfig, **kl_kw):
    """Jitted fn(params, teacher_params, batch [n_micro, micro, S]) -> (KL sum, target count)."""

    def f(params, teacher_params, batch):
        def one(carry, mb):
            kl, m = distill_terms(params, teacher_params, mb, cfg, teacher_cfg, **kl_kw)
            return (carry[0] + jnp.where(m, kl, 0.0).sum(), carry[1] + m.sum()), None

        return jax.lax.scan(one, (jnp.zeros((), f32), jnp.zeros((), jnp.int32)), batch)[0]

    return jax.jit(f)


# ----------------------------------------------------------------------------------- the loop


def _tokenizer_dirs(config) -> tuple[str, str]:
    """(student, teacher) tokenizer directories, found without loading any model."""
    from r1jax import checkpoint, runtime

    t_init = config.teacher.get("init", "")
    if not t_init:
        raise ValueError("config.teacher.init: logit distillation needs a teacher model directory")
    t_dir = config.teacher.get("tokenizer_path") or checkpoint.tokenizer_path(
        runtime.resolve_model_path(t_init)
    )
    if not t_dir:
        raise ValueError(f"config.teacher: {t_init} has no tokenizer; set teacher.tokenizer_path")
    s_init = config.model.get("init", "")
    s_dir = config.tokenizer.get("path", "")
    if not s_dir and s_init:
        s_dir = checkpoint.tokenizer_path(runtime.resolve_model_path(s_init))
    return s_dir or t_dir, t_dir  # a student from scratch uses the teacher's tokenizer


def train_distill(config, workdir: str):
    """Trains the student on KL(teacher || student); writes WORKDIR/model."""
    from r1jax import checkpoint, runtime, supervised
    from r1jax.sft import load_examples, pack
    from r1jax.tokenizer import load_tokenizer

    s_dir, t_dir = _tokenizer_dirs(config)
    tok, t_tok = load_tokenizer(s_dir), load_tokenizer(t_dir)
    check_same_tokenizer(tok, t_tok, s_dir, t_dir)
    os.makedirs(workdir, exist_ok=True)
    mesh = runtime.make_mesh(config)
    t_cfg, t_params, _ = runtime.load_or_init_model(config.teacher, mesh)
    cfg, params, _ = runtime.load_or_init_model(config.model, mesh, t_cfg.vocab_size, config.seed)
    V = tok.vocab_size
    for who, c in (("model", cfg), ("teacher", t_cfg)):
        if c.vocab_size < V:
            raise ValueError(f"config.{who}: {c.vocab_size} embedding rows < {V} tokenizer ids")
    kl_kw = dict(
        vocab_size=V, temperature=float(config.distill.temperature), vocab_chunk=config.vocab_chunk
    )
    texts = load_examples(config.data)
    ids = [(tok.encode(p, add_bos=True), tok.encode(c) + [tok.eos_id]) for p, c in texts]
    n_eval = int(len(ids) * config.data.eval_fraction)
    kw = dict(pad_id=tok.pad_id, loss_on_prompt=config.data.loss_on_prompt)
    rows = pack(ids[n_eval:], config.row_len, **kw)
    micro = config.get("micro_rows", config.batch_rows)
    eval_rows = (
        supervised.pad_rows(pack(ids[:n_eval], config.row_len, **kw), micro) if n_eval else None
    )
    config.optim.total_steps = config.steps
    optimizer, schedule = optim.make_optimizer(config.optim)
    eval_fn = make_eval_kl(cfg, t_cfg, **kl_kw)

    def evaluate(params) -> dict:
        if eval_rows is None:
            return {}
        total, count = eval_fn(params, t_params, runtime.micro_split(eval_rows, micro))
        return {"eval/kl": float(total) / max(int(count), 1)}

    def make_step(state_shardings, batch_shardings):
        return make_distill_step(
            cfg,
            t_cfg,
            optimizer,
            state_shardings=state_shardings,
            teacher_shardings=runtime.shardings_of(t_params),
            batch_shardings=batch_shardings,
            **kl_kw,
        )

    state = runtime.init_state(params, optimizer, mesh)
    state, finished = supervised.fit(
        config,
        workdir,
        mesh,
        state,
        rows,
        schedule,
        name="distill",
        make_step=make_step,
        evaluate=evaluate,
        step_args=(t_params,),
        batch=config.batch_rows,
        micro=micro,
        postfix=("kl",),
    )
    if finished:
        checkpoint.save_model(os.path.join(workdir, "model"), state["params"], cfg, s_dir)
    return state, cfg
