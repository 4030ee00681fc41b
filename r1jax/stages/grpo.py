"""GRPO (R1-Zero, and the RL stages of R1): a loss and a data flow handed to the update builder
and the loop.

One step (shared/DESIGN.md, "One GRPO step, as data"): questions -> template -> token ids ->
group rollout (B prompts x G samples) -> rewards in worker processes (overlapped with the
reference / old-policy scoring on device) -> group advantages (optionally dropping zero-variance
groups and drawing more: DAPO's dynamic sampling) -> minibatches -> jitted sharded updates
(num_epochs x num_minibatches) -> metrics, samples. The loop (r1jax/loop.py) adds evaluation,
logging, checkpoints and the exported model.

Learner rows (config.rl.pack). Padded: each completion is a row of the prompt bucket +
sampling.max_new_tokens tokens, config.micro_batch rows per micro-batch. Packed: completions
with their prompts are packed into rows of rl.pack_len tokens (r1jax.rl.experience.pack) for the
old-policy, reference and update passes, in micro-batches of rl.micro_tokens tokens per device
(rl.micro_tokens // rl.pack_len rows). Shapes stay static: the row length is fixed by the config
(not by the prompt bucket or the lengths drawn), and the number of micro-batches is rounded up to
1, 2, 3, 4, 6, 8, 12, ... (`count_bucket`), so a run compiles at most about 2 log2(N / rows per
micro-batch) shapes per pass, and the micro-batches added by the rounding are skipped at run time
(update's skip_empty), not computed. The loss is the padded path's (tests/test_rl_packing.py).

Multi-host: each process owns whole prompt groups (r1jax.rollout.my_prompts); it encodes,
scores and turns into training rows only its own; metrics are sums over every host's rows.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import distributed, evaluation, loop, optim, plan, rollout, update
from r1jax import sharding as shd
from r1jax.data import DataIterator, load_dataset, templates
from r1jax.errors import ConfigError
from r1jax.metrics import Timer
from r1jax.models import moe, store
from r1jax.rewards import get_reward_fn
from r1jax.rl import experience, losses, objective
from r1jax.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
STEP_METRICS = ("loss", "kl", "clip_frac", "clip_frac_low", "clip_frac_high", "entropy")
STEP_METRICS += ("grad_norm", "sampler_logp_gap", "sampler_logp_gap_max")
IS_METRICS = ("is_ratio_mean", "is_ratio_max", "is_masked_frac")  # with rl.is_correction only
# Reported only by MoE policies (rl/objective.py).
MOE_METRICS = ("routing_disagreement", "moe_router_entropy", "moe_dropped", "moe_max_load_max")
MOE_METRICS += ("moe_balance_loss",)


def _need(cond: bool, field: str, msg: str):
    if not cond:
        raise ConfigError(f"config.{field}: {msg}")


def validate(c, mesh=None) -> None:
    """Errors naming the field, before anything is loaded or compiled; with a mesh, also that
    the batches split over its batch axes and its processes."""
    s, rl = c.sampling, c.rl
    B, G = s.num_prompts, s.num_samples
    _need(B > 0, "sampling.num_prompts", f"must be positive, got {B}")
    _need(G >= 2, "sampling.num_samples", f"GRPO needs >= 2 samples per prompt, got {G}")
    _need(s.max_new_tokens > 0, "sampling.max_new_tokens", "must be positive")
    N = B * G
    _need(
        rl.num_minibatches > 0 and N % rl.num_minibatches == 0,
        "rl.num_minibatches",
        f"{rl.num_minibatches} does not divide the rollout of {B} x {G} = {N} completions",
    )
    M = N // rl.num_minibatches
    _need(
        c.micro_batch > 0 and M % c.micro_batch == 0,
        "micro_batch",
        f"{c.micro_batch} does not divide the minibatch of {M} completions "
        f"({N} / rl.num_minibatches={rl.num_minibatches})",
    )
    _need(rl.num_epochs >= 1, "rl.num_epochs", "must be >= 1")
    if rl.get("pack", False):
        row_len = rl.pack_len or s.max_prompt_len + s.max_new_tokens
        _need(
            row_len >= s.max_prompt_len + s.max_new_tokens,
            "rl.pack_len",
            f"{row_len} tokens cannot hold a prompt of sampling.max_prompt_len={s.max_prompt_len} "
            f"and sampling.max_new_tokens={s.max_new_tokens} tokens",
        )
        _need(
            rl.micro_tokens == 0 or rl.micro_tokens >= row_len,
            "rl.micro_tokens",
            f"{rl.micro_tokens} tokens per device micro-batch hold no row of rl.pack_len="
            f"{row_len} tokens",
        )
    _need(rl.max_gen_batches >= 1, "rl.max_gen_batches", "must be >= 1")
    _need(rl.ref_reset_every >= 0, "rl.ref_reset_every", "must be >= 0 (0: never)")
    try:
        losses.loss_config_from(rl)
    except ValueError as e:
        raise ConfigError(f"config.rl: {e}") from None
    _need(len(c.rewards) > 0, "rewards", "configure at least one reward function")
    for label, spec in c.rewards.items():
        try:
            get_reward_fn(spec.name, **dict(spec.get("kwargs", {}) or {}))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config.rewards.{label}: {e}") from None
    e = c.eval.sampling
    _need(
        e.num_samples >= 1 and e.num_prompts >= 1, "eval.sampling", "num_samples, num_prompts >= 1"
    )
    for f in ("steps", "log_every", "ckpt_every"):
        _need(c[f] >= 1, f, "must be >= 1")
    if mesh is None:
        return
    d, n = shd.batch_divisor(mesh), distributed.process_count()
    _need(
        c.micro_batch % d == 0,
        "micro_batch",
        f"{c.micro_batch} rows do not split over the mesh's {d} batch shards "
        f"(config.mesh={tuple(map(tuple, c.mesh))})",
    )
    rollout.my_prompts(mesh, B)
    if c.get("eval_every", 0):
        rollout.my_prompts(mesh, e.num_prompts, "config.eval.sampling.num_prompts")
    _need(
        B * G % d == 0 and (B * G // d) % rl.num_minibatches == 0,
        "rl.num_minibatches",
        f"each of the mesh's {d} batch shards holds {B * G // max(d, 1)} rows, which do not "
        f"split into {rl.num_minibatches} minibatches ({n} processes)",
    )


def check(c) -> None:
    """Everything that can be checked before loading and compiling (`--dry_run`): the fields,
    the mesh against the job's devices, the batches against the mesh and the processes, and
    the memory plan."""
    validate(c)
    mesh = shd.make_mesh(c.mesh)
    validate(c, mesh)
    check_memory(c, mesh)


def check_memory(c, mesh) -> None:
    """Before anything is loaded: an error when parameters + optimizer state alone exceed the
    devices' memory, a warning when the whole run is estimated not to fit (r1jax.plan)."""
    cfg = store.config_of(c.model)
    p = plan.plan(cfg, dict(mesh.shape), plan.settings_of(c), plan.this_machine(mesh))
    try:
        warnings = plan.check(p)
    except ValueError as e:
        raise ConfigError(f"config.model / config.mesh: {e}") from None
    for w in warnings:
        log.warning("memory plan: %s (python launch/plan.py)", w)


def count_bucket(n: int) -> int:
    """n rounded up to the next 1, 2, 3, 4, 6, 8, 12, 16, ... (2^k or 3 * 2^(k-1)): at most two
    compiled shapes per doubling, at most a third of the micro-batches added."""
    p = 1 << max(0, (n - 1).bit_length())
    return 3 * p // 4 if p >= 4 and 3 * p // 4 >= n else p


def learner_layout(c, mesh) -> tuple[int, int]:
    """(packed row length or 0 for padded rows, rows per micro-batch over the whole mesh)."""
    if not c.rl.get("pack", False):
        return 0, c.micro_batch
    s, d = c.sampling, shd.batch_divisor(mesh)
    row_len = c.rl.pack_len or s.max_prompt_len + s.max_new_tokens
    # Default budget: the tokens of a padded micro-batch of config.micro_batch rows.
    budget = c.rl.micro_tokens or c.micro_batch // d * (s.max_prompt_len + s.max_new_tokens)
    return row_len, max(1, budget // row_len) * d


def put_rows(mesh, rows: dict, row_len: int, micro: int):
    """(device batch, its shardings, pack index or None) of this process's training rows: padded
    rows in micro-batches of `micro` rows, or (row_len > 0) packed rows, their count rounded up to
    whole micro-batches, the same count on every process, then to `count_bucket`."""
    if not row_len:
        return (*update.put_batch(mesh, rows, micro), None)
    packed, index = experience.pack(rows, row_len)
    local = micro * len(mesh.local_devices) // mesh.size  # this process's rows per micro-batch
    n_micro = -(-len(packed["tokens"]) // local)
    n_micro = count_bucket(int(distributed.gather(np.int64(n_micro)).max()))
    pad = n_micro * local - len(packed["tokens"])
    packed = {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for k, v in packed.items()}
    return (*update.put_batch(mesh, packed, micro), index)


class GRPO:
    """What a GRPO run holds; `run()` trains. Usable from notebooks step by step."""

    def __init__(self, config, workdir):
        c = self.c = config
        validate(c)
        self.workdir = workdir
        self.mesh = shd.make_mesh(c.mesh)
        validate(c, self.mesh)
        check_memory(c, self.mesh)
        self.cfg, params, tok_dir = store.load_or_init(c.model, self.mesh, seed=c.seed)
        self.tok_dir = c.tokenizer.get("path") or tok_dir
        if not self.tok_dir:
            raise ConfigError("config.tokenizer.path: the model directory has no tokenizer")
        self.tok = load_tokenizer(self.tok_dir)
        if self.tok.vocab_size > self.cfg.vocab_size:
            raise ConfigError(
                f"config.tokenizer: {self.tok.vocab_size} tokens, the model only "
                f"{self.cfg.vocab_size} (config.tokenizer.path / config.model.init)"
            )
        d, kw = c.data, dict(c.data.get("kwargs", {}) or {})
        self.template = templates.get_template(d.template, **dict(d.template_kwargs))
        self.it = DataIterator(
            load_dataset(d.name, d.split, seed=c.seed, **kw), c.sampling.num_prompts, seed=c.seed
        )
        eval_all = load_dataset(d.name, d.eval_split, seed=c.seed, **kw)
        self.eval_data = [eval_all[i] for i in range(min(c.eval.num_questions, len(eval_all)))]
        self.stack = rollout.reward_stack(c)
        self.loss_cfg = losses.loss_config_from(c.rl)
        self.policy_loss = losses.get_policy_loss(c.rl.get("policy_loss", ""))
        c.optim.total_steps = c.optim.total_steps or c.steps
        self.optimizer, self.schedule = optim.make_optimizer(c.optim)
        self.s_train = rollout.sampling_config(c.sampling, self.tok)
        self.s_eval = rollout.sampling_config(c.eval.sampling, self.tok)
        self.mine = rollout.my_prompts(self.mesh, c.sampling.num_prompts)
        state = {
            "train": update.init_state(params, self.optimizer, self.mesh),
            "rng": distributed.from_host(
                jax.random.key_data(jax.random.key(c.seed)), shd.replicated(self.mesh)
            ),
        }
        if self.loss_cfg.beta > 0:
            state["ref"] = jax.tree.map(jnp.copy, params)
        self.state = state
        self.layout = learner_layout(c, self.mesh)  # (packed row length or 0, micro-batch rows)
        if self.layout[0] and self.cfg.n_experts:
            raise ConfigError(
                "config.rl.pack: packed learner rows are not supported for MoE policies yet (the "
                "rollout's expert choices are kept per padded row); set rl.pack=False"
            )
        self.fns: dict = {}  # (scorer fn | "train", prompt length or "packed") -> jitted function
        self.timer = Timer()

    # -- jitted functions, built on first use for each prompt-length bucket ----------------------
    def _kw(self, P):
        return dict(
            cfg=self.cfg,
            prompt_len=P,
            temperature=self.s_train.temperature or 1.0,
            vocab_chunk=self.c.vocab_chunk,
        )

    def _scorer(self, P, batch_sh, fn=objective.frozen_logprobs):
        key = (fn, "packed" if self.layout[0] else P)
        if key not in self.fns:
            self.fns[key] = update.make_scorer(
                functools.partial(fn, **self._kw(P)),
                param_shardings=update.shardings_of(self.state["train"]["params"]),
                batch_shardings=batch_sh,
                skip_empty="mask" if self.layout[0] else None,
            )
        return self.fns[key]

    def _train_fn(self, P, batch_sh):
        c, packed = self.c, bool(self.layout[0])
        key = ("train", "packed" if packed else P)
        if key not in self.fns:
            M = c.sampling.num_prompts * c.sampling.num_samples // c.rl.num_minibatches
            self.fns[key] = update.make_train_step(
                functools.partial(
                    objective.grpo_loss,
                    routing_replay=bool(self.c.rl.get("routing_replay", False)),
                    router_aux_coef=float(self.c.rl.get("router_aux_coef", 0.0)),
                    loss_cfg=self.loss_cfg,
                    policy_loss=self.policy_loss,
                    **self._kw(P),
                ),
                self.optimizer,
                state_shardings=update.shardings_of(self.state["train"]),
                batch_shardings=batch_sh,
                prepare=functools.partial(
                    objective.token_weights,
                    loss_type=self.loss_cfg.loss_type,
                    max_len=c.sampling.max_new_tokens,
                    num_sequences=M if packed else None,
                ),
                after_update=moe.balancing_hook(self.cfg, self.c.optim.router_bias_speed),
                skip_empty="mask" if packed else None,
            )
        return self.fns[key]

    # -- one step -----------------------------------------------------------------------------
    def _draw(self, step: int, draw: int, state, wait: bool = True) -> dict:
        """One rollout of this process's prompts x G samples; rewards are computed in the reward
        workers (with wait=False, still running when this returns: see `_rewards`)."""
        c, G = self.c, self.c.sampling.num_samples
        examples = self.it.next_part(self.mine.start, self.mine.stop)
        with self.timer("rollout"):
            texts, tokens, mask = rollout.encode_prompts(
                examples, self.template, self.tok, c.sampling.max_prompt_len
            )
            key = jax.random.wrap_key_data(distributed.fetch(state["rng"]))
            key = jax.random.fold_in(jax.random.fold_in(key, step), draw)
            out = rollout.generate(
                state["train"]["params"],
                self.cfg,
                self.s_train,
                tokens,
                mask,
                key,
                mesh=self.mesh,
                num_prompts=c.sampling.num_prompts,
                group_size=G,
            )
            comps = rollout.decode_completions(out, self.tok)
        prompts = [t for t in texts for _ in range(G)]
        future = self.stack.submit(prompts, comps, rollout.reward_fields(examples, G, out))
        d = {
            **experience.make_rows(tokens, mask, out, G),
            "truncated": out["truncated"],
            "prompt": np.asarray(prompts, object),
            "completion": np.asarray(comps, object),
        }
        if wait:
            self._rewards(d, future)
        else:  # the caller scores on device meanwhile, then calls _rewards
            d["future"] = future
        return d

    def _rewards(self, d: dict, future) -> None:
        """Waits for a draw's rewards (worker processes) and adds them to it."""
        with self.timer("reward"):
            res = future.result()
        d.update(
            total=res.total,
            correct=res.correct,
            counters=res.counters,
            **{f"reward/{k}": v for k, v in res.per_fn.items()},
        )

    def _rollout(self, step: int, state) -> tuple[dict, int]:
        """This process's groups to train on. With dynamic sampling (DAPO), groups whose rewards
        are all equal are dropped and more prompts drawn, up to rl.max_gen_batches draws, until
        every host has its quota (hosts agree with a collective); if still short, the batch is
        filled with dropped groups (zero advantage: they add no gradient)."""
        c, G = self.c, self.c.sampling.num_samples
        B = self.mine.stop - self.mine.start
        if not c.rl.dynamic_sampling:  # rewards finish while the device scores
            return self._draw(step, 0, state, wait=False), 1
        draws, kept, dropped = [], [], []
        while len(draws) < max(1, c.rl.max_gen_batches):
            d = self._draw(step, len(draws), state)
            total = d["total"].reshape(B, G)
            varied = np.nanmax(total, 1) > np.nanmin(total, 1)
            for g in range(B):
                (kept if varied[g] else dropped).append(len(draws) * B + g)
            draws.append(d)
            if not distributed.any_true(len(kept) < B):  # every host has enough groups
                break
        groups = np.asarray((kept + dropped)[:B])
        exp = {k: np.concatenate([d[k] for d in draws]) for k in draws[0] if k != "counters"}
        exp = experience.select_groups(exp, groups, G)
        exp["counters"] = draws[-1]["counters"]
        return exp, len(draws)

    def step(self, step: int, state):
        """One loop step: (state, global metrics, this process's samples)."""
        c, rl, G = self.c, self.c.rl, self.c.sampling.num_samples
        exp, draws = self._rollout(step, state)
        rows = {k: exp[k] for k in ("tokens", "attn", "mask", "sampler_logp")}
        P = rows["tokens"].shape[1] - c.sampling.max_new_tokens
        train = state["train"]
        with self.timer("score"):  # reference and old-policy log-probs, once per rollout
            # MoE: the rollout policy's routing, for replay and the disagreement metric.
            rows["old_logp"], rows["ref_logp"], rows["experts"] = self._score(
                rows,
                P,
                train["params"] if rl.num_minibatches > 1 or rl.num_epochs > 1 else None,
                state.get("ref"),
                experts_of=train["params"] if self.cfg.n_experts else None,
            )
            rows = {k: v for k, v in rows.items() if v is not None}
        if "future" in exp:
            self._rewards(exp, exp.pop("future"))
        batch_std = experience.batch_std(exp["total"]) if rl.adv_scale == "batch" else None
        adv, adv_stats = experience.group_advantages(exp["total"], rl, G, batch_std)
        rows["adv"] = np.asarray(adv, np.float32)
        rng = np.random.default_rng([c.seed, step])
        d, blocks, updates = shd.batch_divisor(self.mesh), self._blocks(), []
        with self.timer("update"):
            for _ in range(rl.num_epochs):
                for mb in experience.minibatches(rows, rl.num_minibatches, blocks, d, rng):
                    batch, sh, _ = put_rows(self.mesh, mb, *self.layout)
                    train, m = self._train_fn(P, sh)(train, batch)
                    updates.append(m)
            updates = distributed.fetch(updates)
        state = {**state, "train": train}
        if rl.ref_reset_every and "ref" in state and step % rl.ref_reset_every == 0:
            state["ref"] = jax.tree.map(jnp.copy, train["params"])
        exp["adv"] = rows["adv"]
        samples = experience.sample_rows(exp, self.c.get("num_samples_logged", 8))
        return state, self._metrics(exp, adv_stats, updates, draws, train), samples

    def _score(self, rows: dict, P: int, *params, experts_of=None):
        """Masked log-probs [N, T] of this process's completions under each of `params` (None
        gives None): the old policy (before any update of this rollout) and the reference; last,
        with `experts_of` (MoE), the rollout policy's expert choices under those parameters (else
        None). The rows go to the devices once for all of them."""
        if all(p is None for p in params) and experts_of is None:
            return (*params, None)
        inputs = {k: rows[k] for k in ("tokens", "attn", "mask")}
        batch, sh, index = put_rows(self.mesh, inputs, *self.layout)
        out = []
        for p in params:
            logp = None if p is None else update.unsplit(self._scorer(P, sh)(p, batch))
            if logp is not None and index is not None:
                logp = experience.unpack(logp, index, rows["mask"].shape[1])
            out.append(logp)
        if experts_of is not None:  # padded rows only (rl.pack is refused for MoE policies)
            experts_of = update.unsplit(
                self._scorer(P, sh, objective.rollout_experts)(experts_of, batch)
            )
        return (*out, experts_of)

    def _blocks(self) -> range:
        """The mesh's batch shards (device blocks of rows) that hold this process's rows."""
        d, B = shd.batch_divisor(self.mesh), self.c.sampling.num_prompts
        return range(self.mine.start * d // B, self.mine.stop * d // B)

    def _metrics(self, exp, adv_stats, updates, draws, train) -> dict:
        t = self.timer.pop()
        m = experience.rollout_metrics(exp, adv_stats, self.c.sampling.num_samples)
        m.update(
            {
                "train/skipped_updates": float(sum(u["skipped"] for u in updates)),
                "train/lr": float(self.schedule(max(int(distributed.fetch(train["step"])) - 1, 0))),
                "train/gen_batches": float(draws),
                "perf/rollout_tokens_per_s": m.pop("tokens") / max(t.get("rollout", 0.0), 1e-9),
            }
        )
        for k in STEP_METRICS + tuple(k for k in IS_METRICS if k in updates[0]):
            has, agg = k in updates[0], np.max if k.endswith("_max") else np.mean
            m[f"train/{k}"] = float(agg([u[k] for u in updates])) if has else float("nan")
        for k in (k for k in MOE_METRICS if k in updates[0]):
            m[f"train/{k}"] = float(
                (np.max if k.endswith("_max") else np.mean)([u[k] for u in updates])
            )
        for phase in ("rollout", "reward", "score", "update"):
            m[f"time/{phase}_s"] = t.get(phase, 0.0)
        return m

    # -- evaluation, export, the run ------------------------------------------------------------
    def evaluate(self, step: int, state):
        e = self.c.eval
        summary, records = evaluation.evaluate(
            state["train"]["params"],
            self.cfg,
            self.tok,
            self.eval_data,
            self.stack,
            template=self.template,
            s=self.s_eval,
            k=e.sampling.num_samples,
            prompts_per_batch=e.sampling.num_prompts,
            max_prompt_len=e.sampling.max_prompt_len,
            mesh=self.mesh,
            seed=self.c.seed,
            answer_rule=evaluation.answer_rule(self.c.rewards),
        )
        m = {
            "eval/pass@1": summary["pass@1"],
            "eval/completion_len": summary["completion_len"],
            "eval/truncated_frac": summary["truncated_frac"],
        }
        return m, records[: e.num_logged]

    def export(self, state):
        """The trained policy as a model directory (WORKDIR/model), for the next stage."""
        store.save_model(f"{self.workdir}/model", state["train"]["params"], self.cfg, self.tok_dir)

    def run(self) -> dict:
        r = loop.Run(
            name="grpo",
            state=self.state,
            step=self.step,
            data=self.it,
            evaluate=self.evaluate,
            finish=self.export,
            postfix=("train/reward", "train/accuracy", "train/completion_len"),
            timer=self.timer,
        )
        try:
            return loop.run(self.c, self.workdir, r)
        finally:
            self.state = r.state
            self.stack.pool.close()


def run(config, workdir) -> dict:
    """Trains and evaluates; returns the last logged metrics."""
    return GRPO(config, workdir).run()
