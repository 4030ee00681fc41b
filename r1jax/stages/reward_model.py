"""Reward-model training (R1's helpful and safety RMs): the transformer plus a linear head
(r1jax.models.reward_head), trained on one of two objectives (config.objective; data schemas in
r1jax.data.preferences):

  pairwise   preference pairs {prompt, chosen, rejected}, the Bradley-Terry loss
             -log sigmoid(r_chosen - r_rejected) (R1's helpful RM);
  pointwise  labelled responses {prompt, response, label}, the logistic loss
             -log sigmoid(r) for label 1, -log sigmoid(-r) for label 0 (R1's safety RM).

Losses are averaged over the pairs / responses of the whole batch (exact under micro-batching).
Sequences longer than `row_len` keep their last `row_len` tokens (the response). The result,
WORKDIR/reward_model, plugs into GRPO as the "reward_model" reward (r1jax.rewards.reward_model).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax import distributed, files, loop, optim, update
from r1jax import sharding as shd
from r1jax.data import packing, preferences
from r1jax.errors import ConfigError
from r1jax.models import reward_head, store
from r1jax.tokenizer import load_tokenizer

f32 = jnp.float32


def pairwise_nll(r_chosen, r_rejected):
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected), per pair."""
    return jax.nn.softplus(r_rejected - r_chosen)


def pointwise_nll(r, label):
    """Logistic: -log sigmoid(r) for label 1, -log sigmoid(-r) for label 0, per response."""
    return label * jax.nn.softplus(-r) + (1 - label) * jax.nn.softplus(r)


def terms(params, mb, *, cfg, objective: str):
    """(per-example loss [n], accuracy [n], margin [n]) of one micro-batch; a pair's two
    sequences share one forward pass. accuracy: the pair ranked right / the label's side of 0;
    margin: r_c - r_r / r signed by the label."""
    if objective == "pairwise":
        toks = jnp.concatenate([mb["chosen_tokens"], mb["rejected_tokens"]])
        mask = jnp.concatenate([mb["chosen_mask"], mb["rejected_mask"]])
        rc, rr = jnp.split(reward_head.scores(params, toks, mask, cfg), 2)
        return pairwise_nll(rc, rr), rc > rr, rc - rr
    r, y = reward_head.scores(params, mb["tokens"], mb["mask"], cfg), mb["label"]
    return pointwise_nll(r, y), (r > 0) == (y > 0.5), r * (2 * y - 1)


def _metrics(nll, right, margin, valid):
    n = valid.sum()
    return {"accuracy": ((right * valid).sum(), n), "margin": ((margin * valid).sum(), n)}


def rm_loss(params, mb, ctx, **kw):
    nll, right, margin = terms(params, mb, **kw)
    v = mb["valid"]
    return (nll * v).sum() / ctx["examples"], _metrics(nll, right, margin, v)


def count_examples(batch):
    return batch, {"examples": jnp.maximum(batch["valid"].sum(), 1.0)}


def eval_terms(params, mb, **kw):
    nll, right, margin = terms(params, mb, **kw)
    v = mb["valid"]
    return {"nll": ((nll * v).sum(), v.sum()), **_metrics(nll, right, margin, v)}


def _model(c, mesh):
    """(cfg, {model, head}, tokenizer dir): a reward-model directory continues its head; a model
    directory, "embedded" or "" (random `preset`) gets a fresh head."""
    init = c.model.get("init", "")
    if init and reward_head.is_reward_model(init):
        cfg, params = reward_head.load(init, mesh, **store.overrides_of(c.model))
        return cfg, params, store.tokenizer_path(init)
    cfg, model, tok_dir = store.load_or_init(c.model, mesh, seed=c.seed)
    key = jax.random.fold_in(jax.random.key(c.seed), 1)
    return cfg, {"model": model, "head": reward_head.init_head(cfg, key, mesh)}, tok_dir


def run(config, workdir) -> dict:
    """Trains on pairs or labelled responses; writes WORKDIR/reward_model."""
    c = config
    objective = c.objective
    if objective not in preferences.OBJECTIVES:
        raise ConfigError(f"config.objective={objective!r}: one of {preferences.OBJECTIVES}")
    examples = preferences.load_rows(c.data.name, objective)
    mesh = shd.make_mesh(c.mesh)
    update.check_batch(mesh, c.batch_size, c.micro_batch)
    cfg, params, tok_dir = _model(c, mesh)
    tok_dir = c.tokenizer.get("path") or tok_dir
    if not tok_dir:
        raise ConfigError("config.tokenizer.path: the model directory has no tokenizer")
    tok = load_tokenizer(tok_dir)
    n_eval = int(len(examples) * c.data.eval_fraction)
    rows, cut = preferences.encode_rows(examples[n_eval:], tok, c.row_len, objective)
    eval_rows = preferences.encode_rows(examples[:n_eval], tok, c.row_len, objective)[0]
    eval_rows = packing.pad_rows(eval_rows, c.micro_batch)
    c.optim.total_steps = c.optim.total_steps or c.steps
    optimizer, schedule = optim.make_optimizer(c.optim)
    state = update.init_state(params, optimizer, mesh)
    data = update.RowBatches(rows, c.batch_size, c.micro_batch, mesh, seed=c.seed)
    kw = dict(cfg=cfg, objective=objective)
    fns = {}

    def step(i, state):
        batch, sh = data.next()
        if "train" not in fns:
            fns["train"] = update.make_train_step(
                functools.partial(rm_loss, **kw),
                optimizer,
                state_shardings=update.shardings_of(state),
                batch_shardings=sh,
                prepare=count_examples,
            )
        state, m = fns["train"](state, batch)
        m.pop("examples")
        m = {f"train/{k}": v for k, v in m.items()}
        m["train/lr"] = schedule(max(int(distributed.fetch(state["step"])) - 1, 0))
        return state, m, []

    def evaluate(i, state):
        batch, sh = update.put_table(mesh, eval_rows, c.micro_batch)
        if "eval" not in fns:
            fns["eval"] = update.make_scorer(
                functools.partial(eval_terms, **kw),
                param_shardings=update.shardings_of(state["params"]),
                batch_shardings=sh,
                rows=False,
            )
        m = update.ratios(fns["eval"](state["params"], batch))
        names = {"eval/loss": "nll", "eval/accuracy": "accuracy", "eval/margin": "margin"}
        return {k: m[v] for k, v in names.items()}, []

    def finish(state):
        reward_head.save(files.path(workdir) / "reward_model", state["params"], cfg, tok_dir)

    r = loop.Run("reward_model", state, step, data, evaluate if n_eval else None, finish)
    r.first_metrics = {"data/truncated_sequences": cut}
    r.postfix = ("train/loss", "train/accuracy")
    return loop.run(c, workdir, r)
