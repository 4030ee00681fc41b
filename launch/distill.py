"""Distillation (teacher traces, then SFT or logit distillation of the student); r1jax.stages.pipeline.

  python launch/distill.py --config=configs/distill.py --workdir=/tmp/distill
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("distill")
