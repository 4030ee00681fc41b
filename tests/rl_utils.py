"""A tiny model directory and GRPO config for loop tests (seconds, not minutes)."""

import os

import jax
import ml_collections

from r1jax import configs
from r1jax.data import embedded
from r1jax.models import get_preset, init_params
from r1jax.models.store import save_model
from r1jax.tokenizer import train_sentencepiece


def reward_sevens(prompts, completions, **fields):
    """Share of '7' characters in the completion: easy for a random model to learn more of."""
    return [c.count("7") / max(len(c), 1) for c in completions]


def reward_one(prompts, completions, **fields):
    """Everything is correct: lets rejection sampling keep samples of a random model."""
    return [1.0] * len(completions)


def reward_half_constant(prompts, completions, **fields):
    """Constant for questions with an even first number (zero-variance groups), else varied."""
    out = []
    for c, nums in zip(completions, fields["nums"]):
        out.append(0.5 if nums[0] % 2 == 0 else (len(c) % 5) / 5)
    return out


def make_model_dir(path, seed=0, **overrides):
    """A random small model with a SentencePiece tokenizer trained on the embedded corpus."""
    tok_dir = os.path.join(path, "tok")
    os.makedirs(tok_dir, exist_ok=True)
    docs = [p + c for p, c in embedded.corpus(300, seed=1)]
    tok = train_sentencepiece(
        docs,
        os.path.join(tok_dir, "sp"),
        160,
        byte_fallback=False,
        split_by_whitespace=False,
        max_sentencepiece_length=24,
    )
    small = dict(
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_kv_heads=1,
        head_dim=16,
        d_ff=64,
        vocab_size=tok.vocab_size,
        init_std=0.05,
    )
    cfg = get_preset("tiny", **{**small, **overrides})
    model = os.path.join(path, "model")
    save_model(model, init_params(cfg, jax.random.key(seed)), cfg, tok_dir)
    return model


def tiny_config(model_dir, **changes):
    """The R1-Zero config on a tiny model: 4 prompts x 4 samples, 12 new tokens, 4 steps;
    `changes` are {"dotted.key": value} overrides (r1jax.configs.override)."""
    c = configs.load("r1zero")
    c.model.init = model_dir
    c.model.overrides.update(remat=False, unroll_decode=False)
    c.mesh = (("fsdp", 1),)
    c.rewards = ml_collections.ConfigDict(
        {"sevens": dict(name="tests.rl_utils:reward_sevens", weight=1.0, kwargs={})}
    )
    c.correctness = None
    c.sampling.update(num_prompts=4, num_samples=4, max_new_tokens=12, chunk=4, max_prompt_len=128)
    c.rl.update(loss_type="grpo", beta=0.04, num_minibatches=2, ref_reset_every=3)
    c.micro_batch = 4
    c.optim.update(lr=1e-3, warmup_steps=0, schedule="constant")
    c.steps, c.log_every, c.ckpt_every, c.eval_every, c.samples_every = 4, 1, 2, 0, 2
    c.eval.num_questions = 4
    c.eval.sampling.update(num_samples=2, num_prompts=4, max_new_tokens=12, max_prompt_len=128)
    return configs.override(c, changes)


def seed_everything():
    return jax.random.key(0)
