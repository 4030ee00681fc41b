"""DAPO (Yu et al. 2025): token-level loss, clip-higher, no KL, soft overlong shaping, dynamic
sampling. Defaults from the DAPO paper §4.1 (see shared/reference/anchors_pytorch.md §b).

Embedded demo (CPU, minutes):
  python launch/train.py --config=configs/dapo.py --workdir=/tmp/dapo
The paper's recipe on a real base model (they used Qwen2.5-32B; reward +1/-1):
  python launch/train.py --config=configs/dapo.py:model=DIR,data=math --workdir=...
Expected on the embedded task: like r1zero, with train/gen_batches > 1 once many groups are
solved by every sample (dynamic sampling draws more prompts).
"""

from r1jax.configs import common, r1zero


def get_config(arg=None):
    c = r1zero.get_config(arg)
    embedded = c.model.init == r1zero.EMBEDDED
    c.rl.update(
        loss_type="dapo",
        beta=0.0,
        epsilon_low=0.2,
        epsilon_high=0.28,
        dynamic_sampling=True,
        max_gen_batches=10 if not embedded else 3,
    )
    if c.rewards.accuracy.name == "math":
        c.rewards.accuracy.name = "math_dapo"  # +1 correct / -1 wrong
    max_len = c.sampling.max_new_tokens
    cache = max_len // 5  # DAPO: 16,384 + 4,096 cache -> 20,480 generated tokens
    c.rewards.overlong = common.rewards(
        overlong=("overlong", 1.0, dict(max_len=max_len, cache_len=cache, penalty_factor=1.0))
    )["overlong"]
    c.optim.update(warmup_steps=10 if embedded else 20, schedule="constant")
    if not embedded:
        c.optim.lr = 1e-6
        c.sampling.update(num_prompts=512, num_samples=16, max_new_tokens=20_480, top_p=1.0)
        c.rl.num_minibatches = 16  # mini-batch 512 prompts x 16 / 16 updates
        c.rewards.overlong.kwargs.update(max_len=20_480, cache_len=4_096)
        c.eval.sampling.update(num_samples=32, temperature=1.0, top_p=0.7)  # DAPO's avg@32
    return c


sweep = r1zero.sweep
