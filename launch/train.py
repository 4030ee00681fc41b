"""GRPO training (R1-Zero and the RL stages of R1); the logic is r1jax.stages.grpo.

python launch/train.py --config=configs/r1zero.py --workdir=/tmp/r1zero
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("train")
