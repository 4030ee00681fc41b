"""Reward-model training (pairwise or pointwise); the logic is r1jax.stages.reward_model.

  python launch/reward_model.py --workdir=/tmp/rm \\
      --config=configs/reward_model.py:model=DIR,data=pairs.jsonl
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("reward_model")
