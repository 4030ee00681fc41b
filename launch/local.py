"""Run one r1jax job as N processes on this machine (multi-host on one host: tests, a
workstation), each with its share of fake CPU devices, joined over gloo on loopback.

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \\
      python launch/train.py --config=configs/r1zero.py --workdir=/tmp/r1zero_2p
"""

import sys

from absl import app, flags

from r1jax import launchers

N = flags.DEFINE_integer("num_processes", 2, "processes in the job")
D = flags.DEFINE_integer("devices_per_process", 4, "fake CPU devices per process")
CPU = flags.DEFINE_bool("cpu", True, "run on fake CPU devices (False: the machine's GPUs)")
TIMEOUT = flags.DEFINE_float("timeout_s", 3600, "stop every process after this many seconds")


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give the command after --")
    code = launchers.run_local(
        argv[1:], N.value, devices_per_process=D.value, cpu=CPU.value, timeout_s=TIMEOUT.value
    )
    sys.exit(code)


if __name__ == "__main__":
    app.run(main)
