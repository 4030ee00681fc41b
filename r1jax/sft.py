"""Supervised fine-tuning: next-token loss on completions, several examples packed per row.

Serves R1's cold start (stage 1), the rejection-sampling SFT (stage 3), distillation into
small models, and the pretraining of the embedded base model (`loss_on_prompt=True`: every
token is a target).

Packing puts several (prompt, completion) examples in one row; `segment_ids` (1, 2, ... per
example, 0 for padding) keep attention inside an example and positions restart at 0 for each,
so a packed row computes exactly what the examples would compute alone. The loss is the mean
NLL over all target tokens of the *whole* minibatch (per-token weights carry the global count),
so gradient accumulation over micro-batches is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import optim
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

f32 = jnp.float32


def pack(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    row_len: int,
    *,
    pad_id: int = 0,
    loss_on_prompt: bool = False,
    packing: bool = True,
) -> dict[str, np.ndarray]:
    """Packs (prompt_ids, completion_ids) examples into rows of `row_len` tokens, in order.

    Returns int32 arrays [R, row_len]: tokens, segment_ids, positions, and `target` (1 where the
    token is trained on: a completion token, or any token but a segment's first with
    loss_on_prompt). Examples longer than row_len are an error naming the example.
    """
    rows: list[list[tuple[int, list[int], list[int]]]] = [[]]
    used = 0
    for i, (p, c) in enumerate(examples):
        if not c:
            raise ValueError(f"example {i}: empty completion (nothing to train on)")
        n = len(p) + len(c)
        if n > row_len:
            raise ValueError(f"example {i}: {n} tokens, more than the row length {row_len}")
        if rows[-1] and (not packing or used + n > row_len):
            rows.append([])
            used = 0
        rows[-1].append((i, list(p), list(c)))
        used += n
    shape = (len(rows), row_len)
    out = {k: np.zeros(shape, np.int32) for k in ("tokens", "segment_ids", "positions", "target")}
    out["tokens"][:] = pad_id
    for r, row in enumerate(rows):
        s = 0
        for seg, (_, p, c) in enumerate(row, start=1):
            n = len(p) + len(c)
            out["tokens"][r, s : s + n] = p + c
            out["segment_ids"][r, s : s + n] = seg
            out["positions"][r, s : s + n] = np.arange(n)
            first = s + 1 if loss_on_prompt else s + len(p)
            out["target"][r, first : s + n] = 1
            s += n
    return out


def token_nll_terms(params, batch, cfg: ModelConfig, vocab_chunk: int = 8192):
    """(log-probs of each next token [n, S-1], target mask [n, S-1]) for one micro-batch."""
    h = tfm.forward(params, batch["tokens"], batch["positions"], batch["segment_ids"], cfg)
    logp, _ = tfm.token_logprobs(
        params, h[:, :-1], batch["tokens"][:, 1:], cfg, vocab_chunk=vocab_chunk
    )
    same = batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]
    return logp, (batch["target"][:, 1:] > 0) & same


def make_sft_step(
    cfg: ModelConfig, optimizer, *, state_shardings, batch_shardings, vocab_chunk: int = 8192
):
    """Jitted fn(state, batch [n_micro, micro, S]) -> (state, metrics); state is donated."""

    def micro_loss(params, mb, total):
        logp, m = token_nll_terms(params, mb, cfg, vocab_chunk)
        return -(jnp.where(m, logp, 0.0)).sum() / total

    grad_fn = jax.value_and_grad(micro_loss)

    def step(state, batch):
        params = state["params"]
        same = batch["segment_ids"][..., 1:] == batch["segment_ids"][..., :-1]
        total = jnp.maximum(((batch["target"][..., 1:] > 0) & same).sum(), 1).astype(f32)

        def acc(carry, mb):
            loss, g = grad_fn(params, mb, total)
            return (carry[0] + loss, jax.tree.map(jnp.add, carry[1], g)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, f32), params)
        (loss, grads), _ = jax.lax.scan(acc, (jnp.zeros((), f32), zeros), batch)
        new_state, m = optim.apply_if_finite(state, grads, loss, optimizer)
        return new_state, {"loss": loss, "tokens": total, **m}

    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )


def make_eval_loss(cfg: ModelConfig, vocab_chunk: int = 8192):
    """Jitted fn(params, batch [n_micro, micro, S]) -> (nll sum, target count)."""

    def f(params, batch):
        def one(carry, mb):
            logp, m = token_nll_terms(params, mb, cfg, vocab_chunk)
            return (carry[0] - jnp.where(m, logp, 0.0).sum(), carry[1] + m.sum()), None

        return jax.lax.scan(one, (jnp.zeros((), f32), jnp.zeros((), jnp.int32)), batch)[0]

    return jax.jit(f)


# ----------------------------------------------------------------------------------------------
# The loop: `python launch/sft.py --config=configs/pretrain.py --workdir=DIR`


def load_examples(dcfg, tokenizer=None):
    """(prompt, completion) text pairs from config.data.source: "embedded" (the embedded base
    model's synthetic corpus) or "jsonl:PATH" rows with `prompt` and `completion` fields."""
    src = dcfg.source
    if src == "embedded":
        from r1jax.data import embedded

        return embedded.corpus(dcfg.num_documents, seed=dcfg.seed, slip=dcfg.slip)
    if src.startswith("jsonl:"):
        from r1jax.data import sources

        rows = sources.read_file(src[len("jsonl:") :], schema="sft")
        return [(r["prompt"], r["completion"]) for r in rows]
    raise ValueError(f"config.data.source={src!r}: expected 'embedded' or 'jsonl:PATH'")


def train_sft(config, workdir: str):
    """Trains with next-token loss; writes WORKDIR/model (an r1jax model directory)."""
    import os

    from r1jax import checkpoint, runtime, supervised
    from r1jax.tokenizer import train_sentencepiece

    os.makedirs(workdir, exist_ok=True)
    mesh = runtime.make_mesh(config)
    texts = load_examples(config.data)
    if not texts:
        raise ValueError(f"config.data.source={config.data.source!r}: no examples to train on")
    tok_dir = config.tokenizer.get("path", "")
    if not tok_dir and config.model.get("init"):
        tok_dir = checkpoint.tokenizer_path(runtime.resolve_model_path(config.model.init))
    if not tok_dir:  # train our own on the corpus (deterministic: same corpus, same model)
        tok_dir = os.path.join(workdir, "tokenizer")
        os.makedirs(tok_dir, exist_ok=True)
        train_sentencepiece(
            [p + c for p, c in texts[: config.tokenizer.train_docs]],
            os.path.join(tok_dir, "sp"),
            config.tokenizer.vocab_size,
            byte_fallback=False,
            split_by_whitespace=False,
            max_sentencepiece_length=24,
        )
    tok = runtime.load_tok(tok_dir)
    ids = [(tok.encode(p, add_bos=True), tok.encode(c) + [tok.eos_id]) for p, c in texts]
    n_eval = int(len(ids) * config.data.eval_fraction)
    kw = dict(pad_id=tok.pad_id, loss_on_prompt=config.data.loss_on_prompt)
    rows = pack(ids[n_eval:], config.row_len, **kw)
    micro = config.get("micro_rows", config.batch_rows)
    eval_rows = (
        supervised.pad_rows(pack(ids[:n_eval], config.row_len, **kw), micro) if n_eval else None
    )
    cfg, params, _ = runtime.load_or_init_model(config.model, mesh, tok.vocab_size, config.seed)
    if not config.steps:  # from epochs over the packed rows
        config.steps = max(
            1, int(config.get("epochs", 1) * len(rows["tokens"]) / config.batch_rows)
        )
    config.optim.total_steps = config.steps
    optimizer, schedule = optim.make_optimizer(config.optim)
    eval_fn = make_eval_loss(cfg, config.vocab_chunk)

    def evaluate(params):
        if eval_rows is None:
            return {}
        nll, cnt = eval_fn(params, runtime.micro_split(eval_rows, micro))
        return {"eval/loss": float(nll) / max(int(cnt), 1)}

    def make_step(state_shardings, batch_shardings):
        return make_sft_step(
            cfg,
            optimizer,
            state_shardings=state_shardings,
            batch_shardings=batch_shardings,
            vocab_chunk=config.vocab_chunk,
        )

    state = runtime.init_state(params, optimizer, mesh)
    state, finished = supervised.fit(
        config,
        workdir,
        mesh,
        state,
        rows,
        schedule,
        name="sft",
        make_step=make_step,
        evaluate=evaluate,
        batch=config.batch_rows,
        micro=micro,
    )
    if finished:
        checkpoint.save_model(os.path.join(workdir, "model"), state["params"], cfg, tok_dir)
    return state, cfg
