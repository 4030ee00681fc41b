"""Supervised fine-tuning: next-token loss on completions of (prompt, completion) examples,
several packed per row (r1jax.data.packing).

Serves R1's cold start (stage 1), the rejection-sampling SFT (stage 3), trace distillation into
small models (R1 §4), and the pretraining of the embedded base model (data.loss_on_prompt: every
token is a target). The loss is the mean NLL over all target tokens of the *whole* batch (the
count comes from the update's `prepare`), so gradient accumulation over micro-batches is exact.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from r1jax import distributed, files, loop, optim, update
from r1jax import sharding as shd
from r1jax.data import packing
from r1jax.errors import ConfigError
from r1jax.models import store
from r1jax.tokenizer import load_tokenizer, train_sentencepiece

f32 = jnp.float32


def sft_loss(params, mb, ctx, **kw):
    logp, m = packing.nll_terms(params, mb, **kw)
    return -jnp.where(m, logp, 0.0).sum() / ctx["tokens"], {}


def eval_nll(params, mb, **kw):
    logp, m = packing.nll_terms(params, mb, **kw)
    return {"nll": (-jnp.where(m, logp, 0.0).sum(), m.sum().astype(f32))}


def _tokenizer(config, texts, workdir) -> str:
    """The model's tokenizer, config.tokenizer.path, or one trained here on the corpus."""
    tok_dir = config.tokenizer.get("path", "")
    if not tok_dir and config.model.get("init"):
        tok_dir = store.tokenizer_path(config.model.init)
    if tok_dir:
        return tok_dir
    tok_dir = files.path(workdir) / "tokenizer"  # deterministic: same corpus, same model
    train_sentencepiece(
        [p + c for p, c in texts[: config.tokenizer.train_docs]],
        str(tok_dir / "sp"),
        config.tokenizer.vocab_size,
        byte_fallback=False,
        split_by_whitespace=False,
        max_sentencepiece_length=24,
    )
    return str(tok_dir)


def run(config, workdir) -> dict:
    """Trains with next-token loss; writes WORKDIR/model (an r1jax model directory)."""
    c = config
    texts = packing.load_examples(c.data)
    if not texts:
        raise ConfigError(f"config.data.name={c.data.name!r}: no examples to train on")
    mesh = shd.make_mesh(c.mesh)
    update.check_batch(mesh, c.batch_size, c.micro_batch)
    tok_dir = _tokenizer(c, texts, workdir)
    tok = load_tokenizer(tok_dir)
    ids = packing.encode_examples(texts, tok)
    n_eval = int(len(ids) * c.data.eval_fraction)
    kw = dict(pad_id=tok.pad_id, loss_on_prompt=c.data.loss_on_prompt)
    rows = packing.pack(ids[n_eval:], c.row_len, **kw)
    eval_rows = packing.pad_rows(packing.pack(ids[:n_eval], c.row_len, **kw), c.micro_batch)
    cfg, params, _ = store.load_or_init(c.model, mesh, vocab_size=tok.vocab_size, seed=c.seed)
    if not c.steps:  # from epochs over the packed rows
        c.steps = max(1, int(c.get("epochs", 1) * len(rows["tokens"]) / c.batch_size))
    c.optim.total_steps = c.optim.total_steps or c.steps
    optimizer, schedule = optim.make_optimizer(c.optim)
    state = update.init_state(params, optimizer, mesh)
    data = update.RowBatches(rows, c.batch_size, c.micro_batch, mesh, seed=c.seed)
    terms = dict(cfg=cfg, vocab_chunk=c.vocab_chunk)
    fns = {}

    def step(i, state):
        batch, sh = data.next()
        if "train" not in fns:
            fns["train"] = update.make_train_step(
                functools.partial(sft_loss, **terms),
                optimizer,
                state_shardings=update.shardings_of(state),
                batch_shardings=sh,
                prepare=packing.count_targets,
            )
        state, m = fns["train"](state, batch)
        m = {f"train/{k}": v for k, v in m.items()}
        m["train/lr"] = schedule(max(int(distributed.fetch(state["step"])) - 1, 0))
        return state, m, []

    def evaluate(i, state):
        if not n_eval:
            return {}, []
        batch, sh = update.put_table(mesh, eval_rows, c.micro_batch)
        if "eval" not in fns:
            fns["eval"] = update.make_scorer(
                functools.partial(eval_nll, **terms),
                param_shardings=update.shardings_of(state["params"]),
                batch_shardings=sh,
                rows=False,
            )
        return {"eval/loss": update.ratios(fns["eval"](state["params"], batch))["nll"]}, []

    def finish(state):
        store.save_model(files.path(workdir) / "model", state["params"], cfg, tok_dir)

    r = loop.Run("sft", state, step, data, evaluate if n_eval else None, finish)
    return loop.run(c, workdir, r)
