"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): no length normalisation
(token sum over a constant), no std scaling of the advantage, beta = 0.

Embedded demo:  python launch/train.py --config=configs/dr_grpo.py --workdir=/tmp/drgrpo
Oat-Zero recipe (Qwen2.5-Math-1.5B on MATH levels 3-5, lr 1e-6, G 8, T 1, 3,000 tokens,
128 prompts per step):
  python launch/train.py --config=configs/dr_grpo.py:model=DIR,data=math --workdir=...
Expected on the embedded task: like r1zero; completion lengths grow without the per-sequence
1/|o| term rewarding short correct answers.
"""

from r1jax.configs import r1zero


def get_config(arg=None):
    c = r1zero.get_config(arg)
    c.rl.update(loss_type="dr_grpo", beta=0.0, adv_scale="none")
    if c.model.init != r1zero.EMBEDDED:
        c.optim.update(lr=1e-6, schedule="constant")
        c.sampling.update(num_prompts=128, num_samples=8, max_new_tokens=3000, top_p=1.0)
        c.rl.num_minibatches = 1
        c.data.template = "qwen_math"
    return c


sweep = r1zero.sweep
