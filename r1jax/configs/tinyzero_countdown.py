"""TinyZero's Countdown (Pan et al. 2025): reach a target with 3-4 numbers and + - * /.

TinyZero's prompt (base template, ends with "Let me solve this step by step.\\n<think>") and
its scorer (0 / 0.1 format / 1.0, shared/reference/anchors_pytorch.md §c), with GRPO instead of
TinyZero's PPO critic (TinyZero says GRPO works too), KL 0.001, lr 1e-6, 1,024 tokens.

  python launch/train.py --config=configs/tinyzero_countdown.py:model=/path/to/Qwen2.5-3B \\
      --workdir=...
Expected (TinyZero, nanoAhaMoment): Qwen2.5-3B reaches ~0.5-0.6 test accuracy; 0.5B stays near
the format-only plateau (reward ~0.1). Problems come from r1jax's own generator (3-4 numbers,
targets <= 100, solvable by construction), since the Hub dataset cannot be downloaded here.
"""

from r1jax.configs import common, r1zero


def get_config(arg=None):
    arg = common.parse_arg(arg, model=common.EMBEDDED)
    c = r1zero.get_config(f"model={arg.model},data=countdown")
    c.rewards = common.rewards(accuracy=("countdown", 1.0))  # format credit is built in
    c.rl.update(loss_type="grpo", beta=0.001, num_minibatches=4)
    c.optim.update(lr=1e-6, schedule="constant")
    c.sampling.update(num_prompts=64, num_samples=8, max_new_tokens=1024, max_prompt_len=256)
    c.eval.num_questions = 1024
    c.eval.sampling.update(num_samples=1, max_new_tokens=1024, max_prompt_len=256)
    return c
