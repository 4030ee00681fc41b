"""Reward-model training: R1's helpful RM (pairs, Bradley-Terry) or safety RM (pointwise).

  python launch/reward_model.py --workdir=/tmp/rm \\
    --config=configs/reward_model.py:model=/path/to/base,data=/path/to/pairs.jsonl
  python launch/reward_model.py --workdir=/tmp/safety_rm \\
    --config=configs/reward_model.py:objective=pointwise,model=/path/to/base,data=labels.jsonl
`data` is a JSONL file of {"prompt", "chosen", "rejected"} rows (pairwise) or {"prompt",
"response", "label"} rows, label 1 = safe / good, 0 = not (pointwise). The model sees prompt +
response exactly as written (format prompts the way the policy's prompts are, and give summaries
only for a helpful RM that will score with scope="summary"). The result, WORKDIR/reward_model,
plugs into GRPO as a reward (it runs in the trainer's process, rule rewards in workers):
  c.rewards.helpful = dict(name="reward_model", weight=1.0,
                           kwargs=dict(checkpoint="/tmp/rm/reward_model", scope="summary"))
  c.rewards.safety = dict(name="reward_model", weight=1.0,
                          kwargs=dict(checkpoint="/tmp/safety_rm/reward_model", scope="full"))
R1 [V2 B.5]: helpful 66,000 pairs, batch 256, lr 6e-6, 1 epoch, max length 8,192 (the defaults
below; `steps` is then 66,000 / 256 = 258); safety 106,000 prompts, pointwise, same settings
(steps 414).
"""

from r1jax.configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, model=common.EMBEDDED, data="pairs.jsonl", objective="pairwise")
    c = common.base()
    c.objective = arg.objective  # pairwise (Bradley-Terry on pairs) | pointwise (labelled)
    # A model directory (r1jax or HF; a reward-model directory continues its head), "embedded",
    # or "" for random weights of `preset`.
    c.model = common.model(arg.model, remat=True)
    c.tokenizer = common.tokenizer()
    c.data = common.data("jsonl:" + arg.data, eval_fraction=0.02)
    c.row_len = 8192  # tokens per prompt + response; longer ones keep their end
    c.batch_size = 256  # pairs (pointwise: labelled responses) per optimizer step
    c.micro_batch = 8  # per forward/backward (a pair is 2 rows); gradients accumulate exactly
    c.optim = common.optim(lr=6e-6, warmup_steps=10)
    c.update(common.loop(258, log_every=10, eval_every=10, ckpt_every=100))
    return c
