"""Write an sbatch script that runs r1jax with one task per host of a SLURM GPU cluster.

  python launch/slurm.py --nodes=4 --gpus_per_node=8 --partition=gpu -- \\
      launch/train.py --config=configs/r1zero.py:model=/shared/Qwen2.5-Math-7B \\
      --workdir=/shared/runs/r1zero-7b > r1zero.sbatch && sbatch r1zero.sbatch
`R1JAX_DRY_RUN=1 bash r1zero.sbatch` (with srun on the PATH) prints each task's command.
"""

from absl import app, flags

from r1jax import launchers

NODES = flags.DEFINE_integer("nodes", 2, "hosts (one task each)")
GPUS = flags.DEFINE_integer("gpus_per_node", 8, "GPUs per host")
PARTITION = flags.DEFINE_string("partition", "", "SLURM partition")
TIME = flags.DEFINE_string("time", "24:00:00", "time limit")
NAME = flags.DEFINE_string("job_name", "r1jax", "job name")


def main(argv):
    print(
        launchers.slurm_script(
            argv[1:],
            nodes=NODES.value,
            gpus_per_node=GPUS.value,
            partition=PARTITION.value,
            time_limit=TIME.value,
            job_name=NAME.value,
        ),  # fmt: skip
        end="",
    )


if __name__ == "__main__":
    app.run(main)
