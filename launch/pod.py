"""Run r1jax on every worker of a Cloud TPU VM slice (one process per host; JAX finds the other
workers by itself). Prints the gcloud commands; without --dry_run runs them in order.

  python launch/pod.py --tpu=r1-v5p --zone=us-east5-a --accelerator=v5p-64 --spot --dry_run -- \\
      launch/train.py --config=configs/r1zero.py:model=gs://bucket/Qwen2.5-Math-7B,data=gsm8k \\
      --workdir=gs://bucket/r1zero-7b
Without --accelerator the slice must exist (a queued resource or `tpu-vm create`).
"""

import subprocess

from absl import app, flags

from r1jax import launchers

TPU = flags.DEFINE_string("tpu", None, "TPU VM name", required=True)
ZONE = flags.DEFINE_string("zone", None, "zone, e.g. us-east5-a", required=True)
PROJECT = flags.DEFINE_string("project", "", "GCP project (default: gcloud's)")
ACCEL = flags.DEFINE_string("accelerator", "", "create it first: v5p-64, v5e-256, v6e-64...")
RUNTIME = flags.DEFINE_string("runtime", "v2-alpha-tpuv5", "TPU VM runtime version")
SPOT = flags.DEFINE_bool("spot", False, "spot (preemptible) capacity; r1jax resumes on rerun")
DRY = flags.DEFINE_bool("dry_run", False, "print the commands only")


def main(argv):
    cmds = launchers.pod_commands(
        TPU.value, ZONE.value, argv[1:], project=PROJECT.value, accelerator=ACCEL.value,
        runtime=RUNTIME.value, spot=SPOT.value,
    )  # fmt: skip
    for cmd in cmds:
        print(cmd, flush=True)
        if not DRY.value:
            subprocess.run(cmd, shell=True, check=True)


if __name__ == "__main__":
    app.run(main)
