"""Evaluation with R1's protocol (pass@1, pass@k, cons@k); the logic is r1jax.stages.evaluate.

python launch/eval.py --config=configs/eval.py --workdir=/tmp/eval_sumchain
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("eval")
