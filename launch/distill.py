"""Distillation: teacher traces, then SFT or logit distillation of the student (the logic is
r1jax.stages.pipeline.run_distillation).

python launch/distill.py --config=configs/distill.py --workdir=/tmp/distill
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("distill")
