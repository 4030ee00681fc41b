"""GRPO training (R1-Zero and the RL stages of R1): the loop.

One step (shared/DESIGN.md, "One GRPO step, as data"):
  questions -> template -> token ids -> group rollout (B prompts x G samples) -> rewards in
  worker processes (overlapped with the reference/old-policy scoring on device) -> group
  advantages (optionally dropping zero-variance groups and drawing more: DAPO's dynamic
  sampling) -> minibatches -> jitted sharded updates (mu passes) -> metrics, samples, eval,
  checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import eval as eval_lib
from r1jax import runtime, sampling
from r1jax import sharding as shd
from r1jax.checkpoint import save_model
from r1jax.config_checks import check_resume, validate
from r1jax.data import DataIterator, load_dataset, templates
from r1jax.metrics import MetricsWriter, Timer, progress, truncate_metrics
from r1jax.optim import make_optimizer
from r1jax.rewards import RewardPool, RewardStack
from r1jax.rl import experience, losses
from r1jax.rl.update import make_scorer, make_train_step
from r1jax.train_state import Checkpointer, StopSignal

log = logging.getLogger(__name__)


def reward_stack(config) -> RewardStack:
    specs = [
        dict(name=r.name, weight=r.weight, kwargs=dict(r.get("kwargs", {})), label=label)
        for label, r in config.rewards.items()
    ]
    pool = RewardPool(workers=config.reward_workers, timeout_s=config.reward_timeout_s)
    return RewardStack(
        specs,
        weights=dict(config.get("reward_weights", {}) or {}),
        correctness=config.get("correctness", "auto"),
        pool=pool,
    )


def sampling_config(rc, tok, *, temperature=None, top_p=None, max_new_tokens=None):
    stops = tuple(tuple(tok.encode(s)) for s in rc.get("stop", ()))
    return sampling.SamplingConfig(
        max_new_tokens=max_new_tokens or rc.max_new_tokens,
        temperature=rc.temperature if temperature is None else temperature,
        top_p=rc.top_p if top_p is None else top_p,
        top_k=rc.top_k,
        chunk=rc.chunk,
        eos_ids=tuple(tok.eos_ids),
        stop_sequences=stops,
        pad_id=tok.pad_id,
    )


class Trainer:
    """Holds what the loop needs; `run()` trains. Usable from notebooks step by step."""

    def __init__(self, config, workdir: str):
        validate(config)
        self.c, self.workdir = config, workdir
        os.makedirs(workdir, exist_ok=True)
        self.mesh = runtime.make_mesh(config)
        validate(config, self.mesh)
        self.cfg, params, tok_dir = runtime.load_or_init_model(
            config.model, self.mesh, seed=config.seed
        )
        self.tok_dir = config.tokenizer.get("path") or tok_dir
        self.tok = runtime.load_tok(self.tok_dir)
        if self.tok.vocab_size > self.cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {self.tok.vocab_size} tokens, the model only "
                f"{self.cfg.vocab_size} (config.tokenizer.path / config.model.init)"
            )
        d = config.data
        kw = dict(d.get("kwargs", {}) or {})
        self.train_data = load_dataset(d.name, d.train_split, seed=config.seed, **kw)
        eval_all = load_dataset(d.name, d.eval_split, seed=config.seed, **kw)
        self.eval_data = [eval_all[i] for i in range(min(config.eval.num_questions, len(eval_all)))]
        self.template = templates.get_template(d.template)
        self.stack = reward_stack(config)
        self.loss_cfg = losses.loss_config_from(config.rl)
        config.optim.total_steps = config.steps
        self.optimizer, self.schedule = make_optimizer(config.optim)
        self.state = runtime.init_state(params, self.optimizer, self.mesh)
        self.ref = jax.tree.map(jnp.copy, params) if self.loss_cfg.beta > 0 else None
        self.it = DataIterator(self.train_data, config.rollout.num_prompts, seed=config.seed)
        self.s_train = sampling_config(config.rollout, self.tok)
        e = config.eval
        self.s_eval = sampling_config(
            config.rollout,
            self.tok,
            temperature=e.temperature,
            top_p=e.top_p,
            max_new_tokens=e.max_new_tokens,
        )
        self.ckpt = Checkpointer(workdir)
        self.fns: dict = {}  # ("score" | "train", prompt length) -> jitted function
        self.key = jax.device_put(jax.random.key(config.seed), shd.replicated(self.mesh))
        self.nonfinite_in_a_row = 0
        self.writer = MetricsWriter(workdir)
        self.timer = Timer()
        self.start = 0
        if self.ckpt.latest_step() is not None:
            self._restore(self.ckpt.latest_step())
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    # -- checkpoints ------------------------------------------------------------------------
    def _full_state(self):
        # The RNG key is part of the run's state: every step's key is derived from it.
        full = {"train": self.state, "rng": jax.random.key_data(self.key)}
        return full | ({"ref": self.ref} if self.ref is not None else {})

    def _restore(self, step):
        full, extra = self.ckpt.restore(step, self._full_state())
        check_resume(extra.get("config", {}), json.loads(self.c.to_json_best_effort()))
        self.state, self.ref = full["train"], full.get("ref")
        self.key = jax.random.wrap_key_data(full["rng"])
        self.it.set_state(extra["data"])
        self.start = step  # loop steps (the optimizer may take several per step)
        truncate_metrics(self.workdir, self.start)
        log.warning("resumed from %s at step %d", self.ckpt.dir, self.start)

    def save(self, step):
        extra = {"data": self.it.get_state(), "config": json.loads(self.c.to_json_best_effort())}
        self.ckpt.save(step, self._full_state(), extra)

    # -- jitted functions, built on first use for each prompt-length bucket ----------------------
    def _scorer(self, prompt_len: int, batch):
        if ("score", prompt_len) not in self.fns:
            self.fns["score", prompt_len] = make_scorer(
                self.cfg,
                prompt_len=prompt_len,
                temperature=self.s_train.temperature or 1.0,
                vocab_chunk=self.c.rl.vocab_chunk,
                param_shardings=runtime.shardings_of(self.state["params"]),
                batch_shardings=runtime.batch_shardings(self.mesh, batch),
            )
        return self.fns["score", prompt_len]

    def _train_fn(self, prompt_len: int, batch):
        if ("train", prompt_len) not in self.fns:
            self.fns["train", prompt_len] = make_train_step(
                self.cfg,
                self.loss_cfg,
                self.optimizer,
                prompt_len=prompt_len,
                temperature=self.s_train.temperature or 1.0,
                vocab_chunk=self.c.rl.vocab_chunk,
                state_shardings=runtime.shardings_of(self.state),
                batch_shardings=runtime.batch_shardings(self.mesh, batch),
            )
        return self.fns["train", prompt_len]

    # -- one step -----------------------------------------------------------------------------
    def _draw(self, step: int, draw: int, wait: bool = True) -> dict:
        """One rollout of B prompts x G samples; its rewards are computed in the reward workers
        (with wait=False, still running when this returns: see `_rewards`)."""
        c, G = self.c, self.c.rollout.group_size
        examples = next(self.it)
        with self.timer("rollout"):
            texts, tokens, mask = experience.encode_prompts(
                examples, self.template, self.tok, c.rollout.max_prompt_len
            )
            key = jax.random.fold_in(jax.random.fold_in(self.key, step), draw)
            tokens_d, mask_d = runtime.put_prompts(self.mesh, tokens, mask)
            out = jax.device_get(
                sampling.generate(
                    self.state["params"],
                    tokens_d,
                    mask_d,
                    key,
                    cfg=self.cfg,
                    s=self.s_train,
                    group_size=G,
                )
            )
            comps = experience.decode_completions(out, self.tok)
        prompts = [t for t in texts for _ in range(G)]
        future = self.stack.submit(prompts, comps, experience.reward_fields(examples, G, out))
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

    def rollout(self, step: int) -> tuple[dict, int]:
        """B groups to train on. With dynamic sampling (DAPO), groups whose rewards are all equal
        are dropped and more prompts are drawn, up to rl.max_gen_batches draws; if still short,
        the batch is filled with dropped groups (zero advantage: they add no gradient)."""
        c, G, B = self.c, self.c.rollout.group_size, self.c.rollout.num_prompts
        if not c.rl.dynamic_sampling:  # rewards finish while the device scores (train_step)
            return self._draw(step, 0, wait=False), 1
        draws, kept, dropped = [], [], []
        while len(kept) < B and len(draws) < max(1, c.rl.max_gen_batches):
            d = self._draw(step, len(draws))
            total = d["total"].reshape(B, G)
            varied = np.nanmax(total, 1) > np.nanmin(total, 1)
            for g in range(B):
                gid = len(draws) * B + g
                (kept if varied[g] else dropped).append(gid)
            draws.append(d)
        groups = np.asarray((kept + dropped)[:B])
        exp = {k: np.concatenate([d[k] for d in draws]) for k in draws[0] if k != "counters"}
        exp = experience.select_groups(exp, groups, G)
        exp["counters"] = draws[-1]["counters"]
        return exp, len(draws)

    def train_step(self, step: int):
        c, rl, G = self.c, self.c.rl, self.c.rollout.group_size
        exp, draws = self.rollout(step)
        rows = {k: exp[k] for k in ("tokens", "attn", "mask", "sampler_logp")}
        P = rows["tokens"].shape[1] - c.rollout.max_new_tokens
        with self.timer("score"):  # reference and old-policy log-probs, once per rollout
            split = runtime.micro_split(
                {k: rows[k] for k in ("tokens", "attn", "mask")}, rl.micro_batch
            )
            full, _ = runtime.put_batch(self.mesh, split)
            scorer = self._scorer(P, split)
            if rl.num_minibatches > 1 or rl.num_epochs > 1:  # else on-policy: old = current
                rows["old_logp"] = np.asarray(scorer(self.state["params"], full)).reshape(
                    rows["mask"].shape
                )
            if self.ref is not None:
                rows["ref_logp"] = np.asarray(scorer(self.ref, full)).reshape(rows["mask"].shape)
        if "future" in exp:
            self._rewards(exp, exp.pop("future"))
        adv, adv_stats = experience.compute_advantages(exp["total"], rl, G)
        rows["adv"] = np.asarray(adv, np.float32)
        rng = np.random.default_rng([c.seed, step])
        updates = []
        with self.timer("update"):
            for _ in range(rl.num_epochs):
                for mb in experience.minibatches(
                    rows, rl.num_minibatches, self.loss_cfg, c.rollout.max_new_tokens, rng
                ):
                    mb = runtime.micro_split(mb, rl.micro_batch)
                    batch, _ = runtime.put_batch(self.mesh, mb)
                    self.state, m = self._train_fn(P, mb)(self.state, batch)
                    updates.append(m)
            updates = jax.device_get(updates)
        if rl.ref_reset_every and self.ref is not None and step % rl.ref_reset_every == 0:
            self.ref = jax.tree.map(jnp.copy, self.state["params"])
        exp["adv"] = rows["adv"]
        return self._step_metrics(exp, adv_stats, updates, draws), exp

    def _step_metrics(self, exp, adv_stats, updates, draws) -> dict:
        def mean(k):
            return float(np.mean([u[k] for u in updates])) if k in updates[0] else float("nan")

        lengths = exp["mask"].sum(1)
        t = self.timer.pop()
        m = {
            "train/reward": float(np.nanmean(exp["total"])),
            "train/reward_std": float(np.nanstd(exp["total"])),
            "train/accuracy": float(exp["correct"].mean()),
            "train/completion_len": float(lengths.mean()),
            "train/truncated_frac": float(exp["truncated"].mean()),
            "train/frac_zero_std": float(adv_stats["frac_zero_std"]),
            "train/skipped_updates": float(sum(u["skipped"] for u in updates)),
            "train/lr": float(self.schedule(max(int(self.state["step"]) - 1, 0))),
            "train/gen_batches": float(draws),
            "perf/rollout_tokens_per_s": float(lengths.sum()) / max(t.get("rollout", 0.0), 1e-9),
        }
        for k in (
            "loss",
            "kl",
            "clip_frac",
            "clip_frac_low",
            "clip_frac_high",
            "entropy",
            "grad_norm",
            "sampler_logp_gap",
        ):
            m[f"train/{k}"] = mean(k)
        for phase in ("rollout", "reward", "score", "update"):
            m[f"time/{phase}_s"] = t.get(phase, 0.0)
        for k, v in exp.items():
            if k.startswith("reward/"):
                m["rewards/" + k[7:]] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
        for name, v in exp["counters"].items():
            m[f"rewards/count/{name}"] = float(v)
        return m

    # -- evaluation and samples ---------------------------------------------------------------
    def evaluate(self, step):
        e = self.c.eval
        summary, records = eval_lib.evaluate(
            self.state["params"],
            self.cfg,
            self.tok,
            self.eval_data,
            self.stack,
            template=self.template,
            s=self.s_eval,
            k=e.k,
            prompts_per_batch=e.prompts_per_batch,
            max_prompt_len=self.c.rollout.max_prompt_len,
            seed=self.c.seed,
        )
        with open(os.path.join(self.workdir, "eval_samples.jsonl"), "a") as f:
            for r in records[: e.num_logged]:
                f.write(json.dumps({"step": step, **r}) + "\n")
        return {
            "eval/pass@1": summary["pass@1"],
            "eval/completion_len": summary["completion_len"],
            "eval/truncated_frac": summary["truncated_frac"],
        }

    def log_samples(self, step, exp):
        with open(os.path.join(self.workdir, "samples.jsonl"), "a") as f:
            for n in range(min(self.c.num_samples_logged, len(exp["prompt"]))):
                row = {
                    "step": step,
                    "prompt": exp["prompt"][n],
                    "completion": exp["completion"][n],
                    "reward": float(exp["total"][n]),
                    "correct": bool(exp["correct"][n]),
                    "advantage": float(exp["adv"][n]),
                }
                row.update({k: float(v[n]) for k, v in exp.items() if k.startswith("reward/")})
                f.write(json.dumps(row) + "\n")

    def run(self):
        c = self.c
        if self.start == 0 and c.eval_every:
            self.writer.write(0, self.evaluate(0))
        bar = progress(c.steps, self.start, "grpo")
        try:
            return self._loop(bar)
        finally:  # also on errors: wait for pending checkpoint writes, stop the reward workers
            bar.close()
            self.close()

    def _loop(self, bar) -> dict:
        c, last = self.c, {}
        with StopSignal() as stop:
            for step in range(self.start + 1, c.steps + 1):
                t0 = time.perf_counter()
                m, exp = self.train_step(step)
                m["time/step_s"] = time.perf_counter() - t0
                self.nonfinite_in_a_row = (
                    self.nonfinite_in_a_row + 1 if m["train/skipped_updates"] else 0
                )
                if c.eval_every and (step % c.eval_every == 0 or step == c.steps):
                    m.update(self.evaluate(step))
                if step % c.log_every == 0 or step == c.steps or "eval/pass@1" in m:
                    last = self.writer.write(step, m)
                if self.nonfinite_in_a_row >= c.rl.max_nonfinite_in_a_row:
                    self.save(step)
                    raise FloatingPointError(
                        f"step {step}: non-finite loss/gradients in {self.nonfinite_in_a_row} steps"
                        " in a row (config.rl.max_nonfinite_in_a_row)"
                    )
                if c.samples_every and step % c.samples_every == 0:
                    self.log_samples(step, exp)
                bar.update(1)
                bar.set_postfix(
                    reward=f"{m['train/reward']:.2f}",
                    acc=f"{m['train/accuracy']:.2f}",
                    len=f"{m['train/completion_len']:.0f}",
                )
                if step % c.ckpt_every == 0 or step == c.steps or stop.requested:
                    self.save(step)
                if stop.requested:
                    break
            else:  # finished: the trained policy as a model directory, for the next stage
                save_model(
                    os.path.join(self.workdir, "model"),
                    self.state["params"],
                    self.cfg,
                    self.tok_dir,
                )
        return last

    def close(self):
        self.ckpt.close()
        self.writer.close()
        self.stack.pool.close()


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains and evaluates; returns the last logged metrics."""
    return Trainer(config, workdir).run()
