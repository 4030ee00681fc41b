"""Sample completions from a checkpoint; the logic is r1jax.stages.sample.

python launch/sample.py --config=configs/sample.py:model=DIR
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("sample")
