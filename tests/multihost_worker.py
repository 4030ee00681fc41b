"""One process of a multi-host test job (tests/test_multihost.py): runs a list of tasks with
r1jax's public entry points, the same list on every process.

  python tests/multihost_worker.py SPEC.json [--coordinator=... --num_processes=N --process_id=I]

SPEC.json: {"cache": DIR, "tasks": [{"kind": ..., ...}, ...]}. Kinds: grpo (a GRPO run from
tests/rl_utils.tiny_config, then its parameters saved to WORKDIR/params.npz), copy (process 0
copies checkpoints for later resumes), eval, sft, distill, hf (import a Hugging Face directory
onto the mesh and export it back), moe_ep (tests/moe_ep_case.py's MoE results on an expert mesh,
saved to WORKDIR/ep.npz).
"""

import json
import os
import shutil
import signal
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rl_utils import tiny_config  # noqa: E402

from r1jax import cli, configs, distributed  # noqa: E402
from r1jax import sharding as shd  # noqa: E402
from r1jax.models import hf, store  # noqa: E402
from r1jax.stages import distill, evaluate, grpo, sft  # noqa: E402


def save_params(state, path):
    leaves = jax.tree.leaves(distributed.fetch(state["train"]["params"]))
    if distributed.is_main():
        np.savez(path, *leaves)


def record_draws(workdir):
    """Each process's own count of DAPO draws per step (they must agree)."""

    def wrap(step_fn):
        def step(i, state):
            state, m, samples = step_fn(i, state)
            with open(os.path.join(workdir, f"draws.{distributed.process_index()}"), "a") as f:
                f.write(f"{i} {m['train/gen_batches']}\n")
            return state, m, samples

        return step

    return wrap


def preempt(process: int, at: int):
    """SIGTERM to this process during step `at`, on process `process` only (a preemption)."""

    def wrap(step_fn):
        def step(i, state):
            if i == at and distributed.process_index() == process:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(i, state)

        return step

    return wrap


def run(task):
    kind, wd = task["kind"], task.get("workdir")
    mesh = tuple(map(tuple, task.get("mesh", (("fsdp", -1),))))
    if kind == "grpo":
        c = tiny_config(task["model"], mesh=mesh, **task.get("overrides", {}))
        if "rewards" in task:
            c.rewards = task["rewards"]
        t = grpo.GRPO(c, wd)
        if task.get("record_draws"):
            t.step = record_draws(wd)(t.step)
        if task.get("preempt"):
            t.step = preempt(*task["preempt"])(t.step)
        t.run()
        save_params(t.state, os.path.join(wd, "params.npz"))
    elif kind == "copy":
        if distributed.is_main():
            for dst in task["dsts"]:
                shutil.copytree(task["src"], dst)
        distributed.barrier("copied")
    elif kind == "eval":
        c = configs.load(f"eval:model={task['model']}")
        c.mesh = mesh
        configs.override(c, task.get("overrides", {}))
        evaluate.run(c, wd)
    elif kind == "sft":
        c = configs.load(f"sft:model={task['model']},data={task['data']}")
        c.mesh = mesh
        configs.override(c, task.get("overrides", {}))
        sft.run(c, wd)
    elif kind == "distill":  # a small student from scratch, distilled from the tiny model
        c = configs.load("distill").logit
        c.teacher.init, c.model.init = task["model"], ""
        c.tokenizer.path = store.tokenizer_path(task["model"])
        c.model.overrides.update(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8)
        c.model.overrides.update(d_ff=32)
        c.data.name, c.data.num_examples, c.mesh = "jsonl:" + task["data"], 0, mesh
        configs.override(c, task.get("overrides", {}))
        distill.run(c, wd)
    elif kind == "moe_ep":  # tests/test_expert_parallel.py: a MoE on an expert mesh
        import moe_ep_case

        out = moe_ep_case.run(shd.make_mesh(mesh), task.get("parts", moe_ep_case.PARTS))
        if distributed.is_main():
            os.makedirs(wd, exist_ok=True)
            np.savez(os.path.join(wd, "ep.npz"), **out)
    elif kind == "hf":
        cfg, params = store.load_model(task["src"], shd.make_mesh(mesh))
        hf.save_hf(params, cfg, task["dst"])
    else:
        raise ValueError(kind)


def main():
    spec_path, *flags = sys.argv[1:]
    spec = json.load(open(spec_path))
    fv = cli.flags.FlagValues()
    cli.define_flags(fv, "worker", with_config=False)
    fv(["worker", *flags])
    cli.start(fv)
    if spec.get("cache"):
        jax.config.update("jax_compilation_cache_dir", spec["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    for task in spec["tasks"]:
        t0 = time.perf_counter()
        run(task)
        if distributed.is_main():
            print(
                f"task {task['kind']} {task.get('workdir', '')}: {time.perf_counter() - t0:.1f} s"
            )
    distributed.barrier("done")


if __name__ == "__main__":
    main()
