"""What can be tested of the pod and SLURM launchers without a pod or a cluster: the commands
they generate, a dry run of the sbatch script, the environment detection, and the single-process
behaviour of r1jax.distributed."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from r1jax import distributed, launchers
from r1jax import sharding as shd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["launch/train.py", "--config=configs/r1zero.py:model=gs://b/m", "--workdir=gs://b/run"]


@pytest.mark.parametrize(
    "env, kind",
    [
        ({}, None),
        ({"TPU_WORKER_HOSTNAMES": "10.0.0.1,10.0.0.2"}, "tpu"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single-host TPU VM
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "slurm"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, "mpi"),
    ],
)
def test_cluster_environment_is_detected(monkeypatch, env, kind):
    for k in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_JOB_ID"):
        monkeypatch.delenv(k, raising=False)
    for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.cluster_environment() == kind


def test_pod_commands_create_copy_install_and_run_on_every_worker():
    cmds = launchers.pod_commands(
        "r1", "us-east5-a", TRAIN, project="p", accelerator="v5p-64", spot=True
    )
    create, scp, install, run = cmds
    assert create == (
        "gcloud compute tpus queued-resources create r1-qr --node-id=r1 --zone=us-east5-a "
        "--project=p --accelerator-type=v5p-64 --runtime-version=v2-alpha-tpuv5 --spot"
    )
    assert scp.startswith("gcloud compute tpus tpu-vm scp --recurse . r1:~/r1jax ")
    for c in (install, run):
        assert c.startswith("gcloud compute tpus tpu-vm ssh r1 --zone=us-east5-a --project=p ")
        assert "--worker=all" in c
    assert install.endswith("--command='cd ~/r1jax && pip install -q -e \".[tpu]\"'")
    assert run.endswith(
        "'cd ~/r1jax && python launch/train.py "
        "--config=configs/r1zero.py:model=gs://b/m --workdir=gs://b/run'"
    )
    assert len(launchers.pod_commands("r1", "z", TRAIN)) == 3  # an existing slice: no create


def test_pod_launcher_dry_run_prints_the_commands():
    out = subprocess.run(
        [sys.executable, "launch/pod.py", "--tpu=r1", "--zone=z", "--dry_run", "--", *TRAIN],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.splitlines() == launchers.pod_commands("r1", "z", TRAIN)


def test_slurm_script_runs_one_task_per_host(tmp_path):
    script = launchers.slurm_script(TRAIN, nodes=4, gpus_per_node=8, partition="gpu")
    assert "#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --partition=gpu" in script
    # A dry run: an `srun` that plays 2 tasks, with R1JAX_DRY_RUN making each print its command.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/bash\nshift\nfor i in 0 1; do SLURM_PROCID=$i "$@"; done\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "job.sbatch").write_text(script)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", R1JAX_DRY_RUN="1")
    out = subprocess.run(
        ["bash", str(tmp_path / "job.sbatch")], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["python " + " ".join(TRAIN)] * 2


def test_local_launch_gives_each_process_its_flags_and_devices():
    cmds = launchers.local_commands(["python", "x.py"], 2, 1234)
    assert cmds[1][-3:] == ["--coordinator=127.0.0.1:1234", "--num_processes=2", "--process_id=1"]
    env = launchers.local_env(4, base={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


def test_one_process_is_the_identity():
    mesh = shd.make_mesh((("data", 2), ("fsdp", 4)))
    sh = shd.named_sharding(("batch", None), (8, 3), mesh)
    x = np.arange(24.0).reshape(8, 3)
    g = distributed.global_array(x, sh, (8, 3))
    assert distributed.local_range(sh, (8, 3)) == (0, 8)
    np.testing.assert_array_equal(distributed.local_data(g), x)
    assert distributed.all_sum({"a": 2, "b": 3.5}) == {"a": 2.0, "b": 3.5}
    assert distributed.gather_objects({"k": [1]}) == [{"k": [1]}]
    assert not distributed.any_true(False) and distributed.any_true(True)
    distributed.check_same("anything", "x")  # one process: nothing to compare


def test_a_mesh_that_does_not_match_the_devices_is_one_clear_error():
    with pytest.raises(ValueError, match=r"config.mesh \(\('fsdp', 16\),\).*needs 16 devices"):
        shd.make_mesh((("fsdp", 16),))
    with pytest.raises(ValueError, match="8 devices not divisible by 3"):
        shd.make_mesh((("tensor", 3), ("fsdp", -1)))
