"""Starting one r1jax program on several hosts: N local processes (tests, a workstation), a
Cloud TPU pod slice (gcloud), and a SLURM cluster (sbatch). Every process runs the same
command; r1jax.distributed joins them (explicit flags locally, detected on TPU pods and SLURM).

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \\
      python launch/train.py --config=configs/r1zero.py --workdir=/tmp/r1zero_2p
  python launch/pod.py --tpu=my-v5p --zone=us-east5-a --accelerator=v5p-64 --dry_run -- \\
      launch/train.py --config=configs/r1zero.py:model=... --workdir=gs://bucket/run
  python launch/slurm.py --nodes=4 --gpus_per_node=8 -- launch/train.py --config=... > job.sbatch
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_env(devices_per_process: int, cpu: bool = True, base: dict | None = None) -> dict:
    """The environment of one local process: its share of fake CPU devices, one XLA thread
    pool each (two processes on two cores would otherwise oversubscribe)."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if cpu:
        flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
        env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def local_commands(command: list[str], num_processes: int, port: int) -> list[list[str]]:
    return [
        [*command, f"--coordinator=127.0.0.1:{port}", f"--num_processes={num_processes}",
         f"--process_id={i}"]
        for i in range(num_processes)
    ]  # fmt: skip


def run_local(
    command: list[str],
    num_processes: int,
    *,
    devices_per_process: int = 4,
    cpu: bool = True,
    timeout_s: float = 3600,
    env: dict | None = None,
    out=sys.stdout,
) -> int:
    """Runs `command` as N processes of one job on this machine; returns the first non-zero
    exit code (0 if all succeed). Output lines are prefixed with [process]. A process that
    fails, or the timeout, stops all of them: a hang cannot outlive `timeout_s`."""
    port = free_port()
    procs = [
        subprocess.Popen(
            cmd,
            env=local_env(devices_per_process, cpu, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for cmd in local_commands(command, num_processes, port)
    ]
    lock = threading.Lock()

    def pump(i, p):
        for line in p.stdout:
            with lock:
                out.write(f"[{i}] {line}")
                out.flush()

    threads = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    deadline, code = time.monotonic() + timeout_s, 0
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed or time.monotonic() > deadline:
            code = failed[0] if failed else 124
            break
        time.sleep(0.2)
    for p in procs:  # the others would wait forever in a collective for the one that died
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    for t in threads:
        t.join(timeout=5)
    return code or next((p.returncode for p in procs if p.returncode), 0)


def pod_commands(
    tpu: str,
    zone: str,
    command: list[str],
    *,
    project: str = "",
    accelerator: str = "",
    runtime: str = "v2-alpha-tpuv5",
    spot: bool = False,
    repo: str = ".",
) -> list[str]:
    """The gcloud commands that run `command` on every worker of a Cloud TPU VM slice: create
    it (a queued resource, optionally spot, when `accelerator` is given), copy this checkout to
    every worker, install it with jax[tpu], then run the same command on all workers (JAX finds
    the other workers by itself)."""
    where = f"--zone={zone}" + (f" --project={project}" if project else "")
    ssh = f"gcloud compute tpus tpu-vm ssh {tpu} {where} --worker=all --command="
    out = []
    if accelerator:
        out.append(
            f"gcloud compute tpus queued-resources create {tpu}-qr --node-id={tpu} {where} "
            f"--accelerator-type={accelerator} --runtime-version={runtime}"
            + (" --spot" if spot else "")
        )
    out.append(
        f"gcloud compute tpus tpu-vm scp --recurse {repo} {tpu}:~/r1jax {where} --worker=all"
    )
    out.append(ssh + shlex.quote('cd ~/r1jax && pip install -q -e ".[tpu]"'))
    out.append(ssh + shlex.quote("cd ~/r1jax && python " + shlex.join(command)))
    return out


def slurm_script(
    command: list[str],
    *,
    nodes: int,
    gpus_per_node: int = 8,
    partition: str = "",
    time_limit: str = "24:00:00",
    job_name: str = "r1jax",
) -> str:
    """An sbatch script: one task per host, each seeing all of its host's GPUs; JAX reads the
    job's layout from SLURM's environment (jax.distributed.initialize with no arguments)."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --time={time_limit}",
        "#SBATCH --output=%x-%j.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "set -euo pipefail",
        "# Every task runs the same program; r1jax joins them through SLURM's environment.",
        "# R1JAX_DRY_RUN=1 prints the command each task would run instead of running it.",
        "RUN=${R1JAX_DRY_RUN:+echo}",
        f"srun --kill-on-bad-exit=1 $RUN python {shlex.join(command)}",
    ]
    return "\n".join(lines) + "\n"
