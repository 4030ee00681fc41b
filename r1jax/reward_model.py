"""A scalar reward model (R1's helpful and safety RMs): the transformer plus a linear head.

  python launch/reward_model.py --config=configs/reward_model.py --workdir=DIR

r(x) = w . h_last + b, where h_last [D] is the final-norm hidden state at the last real token of
`prompt + response + EOS` (the EOS gives every sequence the same reading position) and the head
is a [D] vector plus a scalar bias, declared like the model's parameters (`head_specs`).
Two objectives (config.objective; data schemas in r1jax.data.preferences):
  pairwise   preference pairs {prompt, chosen, rejected}, the Bradley-Terry loss
             -log sigmoid(r_chosen - r_rejected) (R1's helpful RM);
  pointwise  labelled responses {prompt, response, label}, the logistic loss
             -log sigmoid(r) for label 1, -log sigmoid(-r) for label 0 (R1's safety RM).
Losses are averaged over the pairs / responses of the whole minibatch (exact under
micro-batching). Sequences longer than `max_len` keep their last `max_len` tokens (the response).

A reward-model directory is an r1jax model directory (loadable by checkpoint.load_model as the
bare transformer) plus `reward_head.npz`.

In GRPO, `RewardModelReward` is a reward function (registry name "reward_model"):
  c.rewards.helpful = dict(name="reward_model", weight=1.0,
                           kwargs=dict(checkpoint="/path/rm", scope="summary"))
scope="summary" scores only the text after </think> (R1's helpful RM: "it scores the summary");
scope="full" the whole response, reasoning included (R1's safety RM). It holds a model, so run
the reward stack in-process (config.reward_workers=0): each worker process would otherwise load
its own copy. The pool calls it one item at a time (batch 1, one compilation per length bucket);
called directly on lists it scores `batch_size` rows at a time.
"""

from __future__ import annotations

import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint, optim, sampling
from r1jax import sharding as shd
from r1jax.data.preferences import check_objective, encode_rows, encode_text, load_rows, pad_right
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig
from r1jax.rewards.format import THINK_CLOSE, THINK_OPEN, with_prompt_prefix

f32 = jnp.float32
HEAD_FILE = "reward_head.npz"
SCOPES = ("summary", "full")


# ------------------------------------------------------------------------------- the head


def head_specs(cfg: ModelConfig) -> dict:
    return {
        "w": tfm.ParamSpec((cfg.d_model,), ("embed",), "normal"),
        "b": tfm.ParamSpec((), (), "zeros"),
    }


def head_shardings(cfg: ModelConfig, mesh) -> dict:
    return {k: shd.named_sharding(s.axes, s.shape, mesh) for k, s in head_specs(cfg).items()}


def init_head(cfg: ModelConfig, key, mesh) -> dict:
    """w ~ N(0, init_std / sqrt(D)) (initial rewards of order init_std), b = 0; fp32."""
    w = cfg.init_std / math.sqrt(cfg.d_model) * jax.random.normal(key, (cfg.d_model,), f32)
    sh = head_shardings(cfg, mesh)
    return {"w": jax.device_put(w, sh["w"]), "b": jax.device_put(jnp.zeros((), f32), sh["b"])}


def last_token_index(mask_NS):
    """Index of the last real token of each row (left- or right-padded)."""
    S = mask_NS.shape[1]
    return S - 1 - jnp.argmax(mask_NS[:, ::-1] > 0, axis=1)


def scores(params, tokens_NS, mask_NS, cfg: ModelConfig):
    """r [N] (fp32) for rows of tokens with their attention mask; params = {model, head}."""
    mask = mask_NS.astype(jnp.int32)
    h = tfm.forward(params["model"], tokens_NS, tfm.positions_from_mask(mask), mask, cfg)
    h_last = jnp.take_along_axis(h, last_token_index(mask)[:, None, None], axis=1)[:, 0]
    return h_last.astype(f32) @ params["head"]["w"].astype(f32) + params["head"]["b"]


def bradley_terry_loss(r_chosen, r_rejected, weight=None):
    """Mean of -log sigmoid(r_chosen - r_rejected) over pairs (weighted: sum(w l) / sum(w))."""
    nll = jax.nn.softplus(r_rejected - r_chosen)
    if weight is None:
        return nll.mean()
    return (weight * nll).sum() / jnp.maximum(weight.sum(), 1e-9)


def pointwise_loss(r, label, weight=None):
    """Mean of -log sigmoid(r) (label 1) or -log sigmoid(-r) (label 0); weighted like BT."""
    nll = label * jax.nn.softplus(-r) + (1 - label) * jax.nn.softplus(r)
    if weight is None:
        return nll.mean()
    return (weight * nll).sum() / jnp.maximum(weight.sum(), 1e-9)


def _terms(params, mb, cfg, objective: str):
    """(per-example loss [n], metric sums) for one micro-batch; a pair's two sequences share one
    forward pass. accuracy: the pair ranked right / the label's side of 0; margin: r_c - r_r /
    r signed by the label."""
    if objective == "pairwise":
        toks = jnp.concatenate([mb["chosen_tokens"], mb["rejected_tokens"]])
        mask = jnp.concatenate([mb["chosen_mask"], mb["rejected_mask"]])
        rc, rr = jnp.split(scores(params, toks, mask, cfg), 2)
        nll, right, margin = jax.nn.softplus(rr - rc), rc > rr, rc - rr
    else:
        r, y = scores(params, mb["tokens"], mb["mask"], cfg), mb["label"]
        nll = y * jax.nn.softplus(-r) + (1 - y) * jax.nn.softplus(r)
        right, margin = (r > 0) == (y > 0.5), r * (2 * y - 1)
    v = mb["valid"]
    sums = {"loss": (nll * v).sum(), "accuracy": (right * v).sum(), "margin": (margin * v).sum()}
    return nll, sums


def make_rm_step(
    cfg: ModelConfig, optimizer, *, state_shardings, batch_shardings, objective="pairwise"
):
    """Jitted fn(state, batch [n_micro, micro, ...]) -> (state, metrics); state is donated.

    batch: the arrays of r1jax.data.preferences.encode_rows and `valid` [..] (0 for padding
    examples). The loss is the mean over the valid examples of the whole batch.
    """

    def micro_loss(params, mb, total):
        nll, m = _terms(params, mb, cfg, objective)
        return (nll * mb["valid"]).sum() / total, jax.tree.map(jax.lax.stop_gradient, m)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def step(state, batch):
        params = state["params"]
        total = jnp.maximum(batch["valid"].sum(), 1.0)

        def acc(carry, mb):
            (_, m), g = grad_fn(params, mb, total)
            return (jax.tree.map(jnp.add, carry[0], m), jax.tree.map(jnp.add, carry[1], g)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, f32), params)
        m0 = {k: jnp.zeros((), f32) for k in ("loss", "accuracy", "margin")}
        (m, grads), _ = jax.lax.scan(acc, (m0, zeros), batch)
        m = {k: v / total for k, v in m.items()}
        new_state, extra = optim.apply_if_finite(state, grads, m["loss"], optimizer)
        return new_state, {**m, **extra}

    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )


def make_rm_eval(cfg: ModelConfig, objective: str = "pairwise"):
    """Jitted fn(params, batch [n_micro, micro, ...]) -> sums {loss, accuracy, margin}."""

    def f(params, batch):
        def one(carry, mb):
            return jax.tree.map(jnp.add, carry, _terms(params, mb, cfg, objective)[1]), None

        m0 = {k: jnp.zeros((), f32) for k in ("loss", "accuracy", "margin")}
        return jax.lax.scan(one, m0, batch)[0]

    return jax.jit(f)


# --------------------------------------------------------------------------------- on disk


def save_reward_model(path: str, params: dict, cfg: ModelConfig, tokenizer_dir=None) -> None:
    """An r1jax model directory plus reward_head.npz; written aside, then renamed into place."""
    path = os.path.abspath(path)
    tmp = path + ".rm_tmp"
    checkpoint.save_model(tmp, params["model"], cfg, tokenizer_dir)
    head = jax.device_get(params["head"])
    np.savez(os.path.join(tmp, HEAD_FILE), w=np.asarray(head["w"]), b=np.asarray(head["b"]))
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def is_reward_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, HEAD_FILE))


def load_reward_model(path: str, mesh=None, **cfg_overrides) -> tuple[ModelConfig, dict]:
    """(config, {model, head}) from a reward-model directory."""
    if not is_reward_model(path):
        raise FileNotFoundError(f"{path}: no {HEAD_FILE} (not a reward-model directory)")
    mesh = mesh or shd.make_mesh((("fsdp", 1),), jax.devices()[:1])
    cfg, model = checkpoint.load_model(path, mesh, **cfg_overrides)
    with np.load(os.path.join(path, HEAD_FILE)) as z:
        w, b = z["w"], z["b"]
    if w.shape != (cfg.d_model,) or b.shape != ():
        raise ValueError(
            f"{path}/{HEAD_FILE}: head w{w.shape} b{b.shape}, expected w({cfg.d_model},) b()"
        )
    sh = head_shardings(cfg, mesh)
    head = {"w": jax.device_put(w.astype(np.float32), sh["w"]), "b": jax.device_put(b, sh["b"])}
    return cfg, {"model": model, "head": head}


# ------------------------------------------------------------------------- as a reward function


def summary_text(prompt: str, completion: str) -> str:
    """What follows the think block (the R1 summary): "" if the block is never closed, the
    whole completion if it has no think tags. A `<think>` opened by the prompt counts."""
    text = with_prompt_prefix(prompt, completion)
    if THINK_CLOSE in text:
        return text.split(THINK_CLOSE, 1)[1]
    return "" if THINK_OPEN in text else completion


_score_jit = jax.jit(scores, static_argnames=("cfg",))


class RewardModelReward:
    """fn(prompts, completions, **fields) -> [r]: a trained reward model as a GRPO reward.

    checkpoint: a reward-model directory (train_reward_model's WORKDIR/reward_model).
    scope: "summary" (text after </think>, R1's helpful RM) or "full" (the whole completion).
    max_len: tokens per scored sequence (longer ones keep their end); batch_size: rows per call
    of the model when given lists; mesh: [(axis, size)] to shard the model (default 1 device).
    The model is loaded on the first call, so building the function (validation) is cheap.
    """

    def __init__(
        self,
        *,
        checkpoint: str,
        scope: str = "summary",
        max_len: int = 4096,
        batch_size: int = 8,
        mesh: list | None = None,
    ):
        if scope not in SCOPES:
            raise ValueError(f"reward_model: scope must be one of {SCOPES}, got {scope!r}")
        if not is_reward_model(checkpoint):
            raise FileNotFoundError(f"reward_model: {checkpoint!r} has no {HEAD_FILE}")
        if max_len < 2 or batch_size < 1:
            raise ValueError(f"reward_model: bad max_len={max_len} / batch_size={batch_size}")
        self.path, self.scope = checkpoint, scope
        self.max_len, self.batch_size = max_len, batch_size
        self.mesh_shape = [tuple(a) for a in mesh] if mesh else None
        self._model = None

    def _load(self):
        if self._model is None:
            from r1jax.tokenizer import load_tokenizer

            tok_dir = checkpoint.tokenizer_path(self.path)
            if tok_dir is None:
                raise FileNotFoundError(f"reward_model: {self.path} has no tokenizer")
            mesh = shd.make_mesh(self.mesh_shape) if self.mesh_shape else None
            cfg, params = load_reward_model(self.path, mesh)
            self._model = (cfg, params, load_tokenizer(tok_dir))
        return self._model

    def text(self, prompt: str, completion: str) -> str:
        """The part of the completion this reward model scores."""
        return summary_text(prompt, completion) if self.scope == "summary" else completion

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        cfg, params, tok = self._load()
        ids = [
            encode_text(tok, p, self.text(p, c), self.max_len)[0]
            for p, c in zip(prompts, completions, strict=True)
        ]
        out = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            real = len(chunk)
            if len(ids) > self.batch_size:  # one shape for all chunks: pad with copies
                chunk = chunk + [chunk[-1]] * (self.batch_size - real)
            length = min(sampling.bucket(max(map(len, chunk))), self.max_len)
            tokens, mask = pad_right(chunk, tok.pad_id, length)
            r = _score_jit(params, tokens, mask, cfg=cfg)
            out += [float(x) for x in np.asarray(r)[:real]]
        return out


# ------------------------------------------------------------------------------- the loop


def train_reward_model(config, workdir: str):
    """Trains on pairs or labelled responses (config.objective, default "pairwise"); writes
    WORKDIR/reward_model (see save_reward_model).

    config.model.init: a reward-model directory (continues it), or a model directory /
    "embedded" / "" (random, config.model.preset) that gets a fresh head.
    """
    from r1jax import runtime, supervised

    objective = check_objective(config.get("objective", "pairwise"))
    examples = load_rows(config.data.source, objective)
    os.makedirs(workdir, exist_ok=True)
    mesh = runtime.make_mesh(config)
    init = runtime.resolve_model_path(config.model.get("init", ""))
    overrides = dict(config.model.get("overrides", {}) or {})
    if init and is_reward_model(init):
        cfg, params = load_reward_model(init, mesh, **overrides)
        tok_dir = checkpoint.tokenizer_path(init)
    else:
        cfg, model, tok_dir = runtime.load_or_init_model(config.model, mesh, seed=config.seed)
        key = jax.random.fold_in(jax.random.key(config.seed), 1)
        params = {"model": model, "head": init_head(cfg, key, mesh)}
    tok_dir = config.tokenizer.get("path") or tok_dir
    tok = runtime.load_tok(tok_dir)
    n_eval = int(len(examples) * config.data.eval_fraction)
    rows, cut = encode_rows(examples[n_eval:], tok, config.max_len, objective)
    micro = config.get("micro_pairs", config.batch_pairs)
    eval_rows = encode_rows(examples[:n_eval], tok, config.max_len, objective)[0]
    eval_rows = supervised.pad_rows(eval_rows, micro)
    config.optim.total_steps = config.steps
    optimizer, schedule = optim.make_optimizer(config.optim)
    eval_fn = make_rm_eval(cfg, objective)

    def evaluate(params) -> dict:
        if not n_eval:
            return {}
        m = jax.device_get(eval_fn(params, runtime.micro_split(eval_rows, micro)))
        return {f"eval/{k}": float(v) / n_eval for k, v in m.items()}

    def make_step(state_shardings, batch_shardings):
        return make_rm_step(
            cfg,
            optimizer,
            state_shardings=state_shardings,
            batch_shardings=batch_shardings,
            objective=objective,
        )

    state = runtime.init_state(params, optimizer, mesh)
    state, finished = supervised.fit(
        config,
        workdir,
        mesh,
        state,
        rows,
        schedule,
        name="reward_model",
        make_step=make_step,
        evaluate=evaluate if n_eval else None,
        batch=config.batch_pairs,
        micro=micro,
        postfix=("loss", "accuracy"),
        first_metrics={"data/truncated_sequences": cut},
    )
    if finished:
        save_reward_model(os.path.join(workdir, "reward_model"), state["params"], cfg, tok_dir)
    return state, cfg
