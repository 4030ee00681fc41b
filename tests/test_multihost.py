"""Multi-host on one machine: 2 processes x 4 CPU devices (gloo on loopback) against 1 process x
8 devices (the same mesh) and a 4-device mesh (another mesh, on 4 of those devices). Budget:
about 4 minutes on 2 cores, most of it two job launches (tests/multihost_worker.py runs every
scenario inside each); every wait is bounded, so a hang fails instead of stalling CI.

Checked: a short GRPO run with several minibatches gives equal metrics and parameters; a
checkpoint made at 2 processes (by a preemption that reached one host) resumes at 2 processes,
at 1 x 8 devices and on a 4-device mesh equal to the uninterrupted run; evaluation gives
identical per-question results; one SFT and one distillation step give equal losses; a Hugging
Face checkpoint imported and exported is bit-identical; only process 0 writes metrics, samples
and TensorBoard files; DAPO's dynamic sampling draws the same number of batches on every host;
bad starts fail fast with one line.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hf_utils import make_hf_model
from rl_utils import make_model_dir

from r1jax import launchers

WORKER = str(pathlib.Path(__file__).with_name("multihost_worker.py"))
REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCH_TIMEOUT_S = 600
TOL = 1e-5


def _env():
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def launch(spec: dict, path: pathlib.Path, processes: int, devices: int) -> str:
    """Runs the worker on `spec` as `processes` x `devices`; returns its output (asserting
    success)."""
    path.write_text(json.dumps(spec))
    cmd = [sys.executable, WORKER, str(path)]
    if processes > 1:
        log = path.with_suffix(".log").open("w")
        code = launchers.run_local(
            cmd, processes, devices_per_process=devices, timeout_s=LAUNCH_TIMEOUT_S,
            env=_env(), out=log,
        )  # fmt: skip
        log.close()
        out = path.with_suffix(".log").read_text()
    else:
        p = subprocess.run(
            cmd, env=launchers.local_env(devices, base=_env()), capture_output=True, text=True,
            timeout=LAUNCH_TIMEOUT_S,
        )  # fmt: skip
        code, out = p.returncode, p.stdout + p.stderr
    assert code == 0, f"{processes} x {devices} job failed ({code}):\n{out[-6000:]}"
    return out


def grpo(workdir, model, mesh=None, **overrides):
    task = {"kind": "grpo", "workdir": str(workdir), "model": model, "overrides": overrides}
    return task | ({"mesh": mesh} if mesh else {})


# Adam's eps: at the default 1e-8 a gradient entry of ~1e-8 (pure rounding noise) moves its
# parameter by ~lr/2 and a 10% difference in that noise by 5% of a step; at 1e-5 the update of
# such entries is linear in the gradient, so parameters compare what the processes computed.
ADAM = {"optim.eps": 1e-5}
GRPO_A = {"steps": 2, "ckpt_every": 5, "rl.num_minibatches": 2, "samples_every": 1,
          "sampling.num_prompts": 8, "micro_batch": 8, **ADAM}  # fmt: skip
# Resumes on another mesh are compared at one minibatch per rollout: with several, each mesh
# shuffles rows within its own device blocks (by design), so minibatches differ between meshes.
RESUME = {"steps": 2, "rl.num_minibatches": 1, "ckpt_every": 10, "sampling.num_prompts": 8,
          "micro_batch": 8, **ADAM}  # fmt: skip
MESH8 = [["data", 2], ["fsdp", 4]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    model = make_model_dir(str(root / "model"))
    hf_src = str(root / "hf")
    make_hf_model(hf_src, "qwen2")
    data = root / "sft.jsonl"
    rows = [{"prompt": f"Compute {i} + {i}.", "completion": f" {2 * i}"} for i in range(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = str(root / "xla_cache")
    # Evaluation at top_p=1: on CPU, collectives between processes go through gloo, whose sums
    # run in another order than the in-process ones (ulp-level logit differences); top-p's
    # cutoff turns such a difference into another token where the tiny random model's flat
    # distribution puts two tokens at the nucleus edge. Without truncation the draws agree.
    ev = {"data.num_examples": 8, "sampling.num_prompts": 8, "sampling.top_p": 1.0}
    common = [
        {"kind": "eval", "model": model, "overrides": ev},
        {"kind": "sft", "model": model, "data": str(data),
         "overrides": {"steps": 1, "batch_size": 8, "micro_batch": 8, "row_len": 64,
                       "data.eval_fraction": 0.0}},
        {"kind": "distill", "model": model, "data": str(data),
         "overrides": {"steps": 1, "batch_size": 8, "micro_batch": 8, "row_len": 64,
                       "data.eval_fraction": 0.0}},
        {"kind": "hf", "src": hf_src},
    ]  # fmt: skip

    def tag(tasks, name, mesh=None):
        out = []
        for t in tasks:
            t = dict(t, workdir=str(root / name / t["kind"]))
            if t["kind"] == "hf":
                t["dst"] = str(root / name / "hf_export")
            out.append(t | ({"mesh": mesh} if mesh else {}))
        return out

    dapo = {"steps": 1, "rl.dynamic_sampling": True, "rl.max_gen_batches": 4, "rl.beta": 0.0,
            "rl.loss_type": "dapo", "sampling.num_prompts": 8, "micro_batch": 8}  # fmt: skip
    half = {"half": {"name": "tests.rl_utils:reward_half_constant", "weight": 1.0, "kwargs": {}}}
    two = [
        grpo(root / "2p" / "A", model, **GRPO_A),
        # B: the same run, preempted: SIGTERM on process 1 only during step 1 -> checkpoint 1
        grpo(root / "2p" / "B", model, **RESUME) | {"preempt": [1, 1]},
        {"kind": "copy", "src": str(root / "2p" / "B"),
         "dsts": [str(root / d) for d in ("2p/B2", "1p8/B8", "1p8/B4")]},
        grpo(root / "2p" / "B2", model, **RESUME),
        grpo(root / "2p" / "D", model, **dapo) | {"rewards": half, "record_draws": True},
        *tag(common, "2p"),
    ]  # fmt: skip
    eight = [
        grpo(root / "1p8" / "A", model, MESH8, **GRPO_A),
        grpo(root / "1p8" / "C", model, MESH8, **RESUME),  # the uninterrupted run
        grpo(root / "1p8" / "B8", model, MESH8, **RESUME),
        grpo(root / "1p8" / "B4", model, [["fsdp", 4]], **RESUME),  # 4 of its 8 devices
        *tag(common, "1p8", MESH8),
    ]
    logs = {}
    logs["2p"] = launch({"cache": cache, "tasks": two}, root / "2p.json", 2, 4)
    logs["1p8"] = launch({"cache": cache, "tasks": eight}, root / "1p8.json", 1, 8)
    for name, log in logs.items():  # per-task times, for the budget (shown with pytest -s)
        print(name, *(line for line in log.splitlines() if line.startswith("task ")), sep="\n  ")
    return root, logs


def metrics(path) -> list[dict]:
    return [json.loads(line) for line in open(path / "metrics.jsonl")]


def assert_same_run(a: pathlib.Path, b: pathlib.Path):
    ma, mb = metrics(a), metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb]
    for ra, rb in zip(ma, mb):
        assert set(ra) == set(rb)
        for k in ra:
            if k.startswith(("time/", "perf/")) or ra[k] is None:
                continue
            assert rb[k] == pytest.approx(ra[k], abs=TOL), (a, b, ra["step"], k)
    pa, pb = np.load(a / "params.npz"), np.load(b / "params.npz")
    assert len(pa.files) == len(pb.files) > 5
    for name in pa.files:
        np.testing.assert_allclose(pa[name], pb[name], atol=TOL, rtol=0)


def test_grpo_with_minibatches_two_processes_equal_one(runs):
    root, _ = runs
    assert_same_run(root / "1p8" / "A", root / "2p" / "A")
    assert [r["step"] for r in metrics(root / "2p" / "A")] == [1, 2]


@pytest.mark.parametrize("resumed", ["2p/B2", "1p8/B8", "1p8/B4"])
def test_checkpoint_at_two_processes_resumes_anywhere(runs, resumed):
    root, _ = runs
    assert_same_run(root / "1p8" / "C", root / resumed)


def test_evaluation_gives_identical_per_question_results(runs):
    root, _ = runs

    def per_sample(d):
        rows = [json.loads(x) for x in open(root / d / "eval" / "eval_samples.jsonl")]
        return sorted((r["index"], r["sample"], r["completion"], r["correct"]) for r in rows)

    assert per_sample("2p") == per_sample("1p8") and len(per_sample("2p")) == 8 * 4
    s2, s8 = (json.load(open(root / d / "eval" / "eval.json")) for d in ("2p", "1p8"))
    assert s2["pass@1"] == s8["pass@1"] and s2["num_questions"] == 8


@pytest.mark.parametrize("kind", ["sft", "distill"])
def test_one_supervised_step_gives_equal_losses(runs, kind):
    root, _ = runs
    a, b = metrics(root / "2p" / kind), metrics(root / "1p8" / kind)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1]
    for k in a[0]:
        if not k.startswith(("time/", "perf/")):
            assert b[0][k] == pytest.approx(a[0][k], rel=1e-5, abs=1e-6), k
    assert a[0]["train/loss"] > 0


def test_hf_import_and_export_is_bit_identical(runs):
    root, _ = runs
    original = (root / "hf" / "model.safetensors").read_bytes()
    for d in ("2p", "1p8"):
        assert (root / d / "hf_export" / "model.safetensors").read_bytes() == original, d


def test_only_process_zero_writes_outputs(runs):
    root, _ = runs
    a = root / "2p" / "A"
    assert [r["step"] for r in metrics(a)] == [1, 2]  # one row per step, not two
    samples = [json.loads(x) for x in open(a / "samples.jsonl")]
    assert [s["step"] for s in samples] == [s for s in (1, 2) for _ in range(8)]
    assert len(list((a / "tensorboard").iterdir())) == 1  # one event file
    assert (root / "2p" / "eval" / "eval.json").exists()


def test_dynamic_sampling_hosts_agree_on_when_to_stop(runs):
    root, _ = runs
    d = root / "2p" / "D"
    draws = [(d / f"draws.{i}").read_text() for i in (0, 1)]
    assert draws[0] == draws[1]
    assert max(float(line.split()[1]) for line in draws[0].splitlines()) >= 2


def test_a_preemption_on_one_host_stops_every_host_at_the_same_checkpoint(runs):
    root, _ = runs
    p = root / "2p" / "B"  # SIGTERM reached process 1 only, during step 1 of 2
    assert [r["step"] for r in metrics(p)] == [1]
    assert sorted(int(d.name) for d in (p / "checkpoints").iterdir() if d.name.isdigit()) == [1]
    assert not (p / "model").exists()  # stopped, not finished


def _two(args_of, timeout=120):
    """Starts 2 processes of launch/train.py with per-process arguments; (codes, outputs)."""
    port = launchers.free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "launch" / "train.py"), *args_of(i),
             f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
             "--init_timeout_s=20"],
            env=launchers.local_env(4, base=_env()), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            p.kill()
            outs.append(p.communicate()[0])
    return [p.returncode for p in procs], outs


DRY = ["--config=configs/r1zero.py", "--dry_run"]


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda i: [*DRY, f"--config.seed={i}"], "the resolved config differs between processes"),
        (lambda i: [*DRY, "--config.mesh=(('fsdp',3),)"], "config.mesh"),
        (
            lambda i: [*DRY, "--config.sampling.num_prompts=3", "--config.micro_batch=8"],
            "config.sampling.num_prompts=3 prompts do not split over 2 processes",
        ),
    ],
)
def test_bad_starts_fail_fast_with_one_line(args, message):
    codes, outs = _two(args)
    assert all(c != 0 for c in codes)
    assert any(message in o for o in outs), outs[0][-2000:]


def test_an_unreachable_coordinator_is_one_line_naming_it():
    port = launchers.free_port()  # nobody listens there
    p = subprocess.run(
        [sys.executable, str(REPO / "launch" / "train.py"), *DRY,
         f"--coordinator=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
         "--init_timeout_s=3"],
        env=launchers.local_env(4, base=_env()), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2
    assert f"could not reach the coordinator at 127.0.0.1:{port} within 3 s" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
