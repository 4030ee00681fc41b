"""The four-stage R1 pipeline; rerun the same command to resume. r1jax.stages.pipeline.

python launch/pipeline.py --config=configs/r1.py --workdir=/tmp/r1
"""

from r1jax import cli

if __name__ == "__main__":
    cli.main("pipeline")
