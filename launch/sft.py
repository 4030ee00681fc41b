"""Supervised fine-tuning and pretraining; the logic is r1jax.stages.sft.

python launch/sft.py --config=configs/pretrain.py --workdir=/tmp/pretrain
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("sft")
