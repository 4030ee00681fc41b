"""Rejection sampling into an SFT dataset; the logic is r1jax.stages.rejection.

python launch/rejection_sample.py --config=configs/rejection.py --workdir=/tmp/rejection
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("rejection")
