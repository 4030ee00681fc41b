"""The four-stage R1 pipeline (R1 §3, Nature Fig. 2), each stage in its own sub-directory.

  base --(1) cold-start SFT--> Dev1 --(2) reasoning RL--> Dev2 --(3) rejection sampling,
  then SFT *from the base*--> Dev3 --(4) all-scenario RL (rules + reward model, T=0.7)--> R1

Every stage is one of r1jax's own loops run on a config from configs/r1.py; its outputs stay in
WORKDIR/<n>_<stage>/ (a `model/` directory, metrics, checkpoints) and a `DONE` file marks it
finished, so a rerun skips finished stages and resumes an interrupted one from its
checkpoints (each loop auto-resumes, and refuses a changed config). After each stage the model is
evaluated on the held-out split (eval.json in the stage directory); pipeline.json collects them.
"""

from __future__ import annotations

import json
import os
import random

from r1jax import eval as eval_lib
from r1jax import rejection, reward_model, sft, train
from r1jax.data import embedded, templates

STAGES = ("cold_start", "reasoning_rl", "rejection_sft", "all_scenario_rl")


def _stage_dir(workdir: str, i: int, name: str) -> str:
    return os.path.join(workdir, f"{i + 1}_{name}")


def _done(path: str) -> bool:
    return os.path.exists(os.path.join(path, "DONE"))


def _write_jsonl(path: str, rows) -> str:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)
    return path


def embedded_cold_start(path: str, n: int, seed: int = 0) -> str:
    """R1's cold start on the embedded task: a few hundred careful, readable reasoning traces
    (no slips), in the R1-Zero format the later stages reward."""
    task = embedded.SumChain(seed=seed)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ex = task.example("train", 10_000_000 + i)  # away from the indices RL starts with
        rows.append(
            {
                "prompt": templates.r1zero(ex["question"]),
                "completion": embedded.response(ex["nums"], rng, "reason", slip=0.0),
            }
        )
    return _write_jsonl(path, rows)


def embedded_preferences(path: str, n: int, seed: int = 0) -> str:
    """Preference pairs for the stage-4 reward model on the embedded task: a tagged, reasoned,
    correct answer is preferred over an untagged or guessed one (a stand-in for R1's 66k
    helpfulness pairs, which judge the summary)."""
    task = embedded.SumChain(seed=seed)
    rng = random.Random(seed + 1)
    rows = []
    for i in range(n):
        ex = task.example("train", 20_000_000 + i)
        worse = rng.choice(["guess", "untagged"])
        rows.append(
            {
                "prompt": templates.r1zero(ex["question"]),
                "chosen": embedded.response(ex["nums"], rng, "reason", slip=0.0),
                "rejected": embedded.response(ex["nums"], rng, worse, slip=0.4),
            }
        )
    return _write_jsonl(path, rows)


def _evaluate(config, model_dir: str, stage_dir: str) -> dict:
    ec = config.eval.copy_and_resolve_references()
    ec.model = model_dir
    summary = eval_lib.run(ec, os.path.join(stage_dir, "eval"))
    with open(os.path.join(stage_dir, "eval.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def run_pipeline(config, workdir: str) -> dict:
    """Runs (or resumes) the four stages; returns {stage: eval summary}."""
    os.makedirs(workdir, exist_ok=True)
    dirs = {name: _stage_dir(workdir, i, name) for i, name in enumerate(STAGES)}
    results = {}
    base = config.base

    # 1. Cold start: SFT of the base on a small set of long, readable CoT examples.
    d = dirs["cold_start"]
    if not _done(d):
        c = config.cold_start.copy_and_resolve_references()
        c.model.init = base
        if c.data.source == "embedded_cold_start":
            os.makedirs(d, exist_ok=True)
            c.data.source = "jsonl:" + embedded_cold_start(
                os.path.join(d, "cold_start.jsonl"), config.cold_start_examples
            )
        sft.train_sft(c, d)
    results["cold_start"] = _finish(config, d)

    # 2. Reasoning RL from Dev1: rule rewards + language consistency.
    d = dirs["reasoning_rl"]
    if not _done(d):
        c = config.reasoning_rl.copy_and_resolve_references()
        c.model.init = os.path.join(dirs["cold_start"], "model")
        train.train_and_evaluate(c, d)
    results["reasoning_rl"] = _finish(config, d)

    # 3. Rejection sampling from Dev2, then SFT of the *base* on the kept samples.
    d = dirs["rejection_sft"]
    if not _done(d):
        rc = config.rejection.copy_and_resolve_references()
        rc.model.init = os.path.join(dirs["reasoning_rl"], "model")
        data = os.path.join(d, "rejection", "rejection.jsonl")
        if not os.path.exists(data):
            rejection.rejection_sample(rc, os.path.join(d, "rejection"))
        c = config.rejection_sft.copy_and_resolve_references()
        c.model.init = base
        c.data.source = "jsonl:" + data
        sft.train_sft(c, d)
    results["rejection_sft"] = _finish(config, d)

    # 4. All-scenario RL from Dev3: rules + a reward model on the summary, temperature 0.7.
    d = dirs["all_scenario_rl"]
    if not _done(d):
        rm_dir = os.path.join(d, "reward_model")
        if not os.path.exists(os.path.join(rm_dir, "reward_model")):
            mc = config.reward_model.copy_and_resolve_references()
            mc.model.init = base
            if mc.data.source == "jsonl:embedded_preferences":
                os.makedirs(rm_dir, exist_ok=True)
                mc.data.source = "jsonl:" + embedded_preferences(
                    os.path.join(rm_dir, "pairs.jsonl"), config.preference_pairs
                )
            reward_model.train_reward_model(mc, rm_dir)
        c = config.all_scenario_rl.copy_and_resolve_references()
        c.model.init = os.path.join(dirs["rejection_sft"], "model")
        c.rewards.helpful.kwargs.checkpoint = os.path.join(rm_dir, "reward_model")
        train.train_and_evaluate(c, d)
    results["all_scenario_rl"] = _finish(config, d)

    with open(os.path.join(workdir, "pipeline.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def _finish(config, stage_dir: str) -> dict:
    """Evaluates a finished stage once (cached in eval.json) and marks it DONE."""
    done = os.path.join(stage_dir, "DONE")
    if os.path.exists(done):
        with open(os.path.join(stage_dir, "eval.json")) as f:
            return json.load(f)
    summary = _evaluate(config, os.path.join(stage_dir, "model"), stage_dir)
    with open(done, "w") as f:
        f.write("ok\n")
    print(f"{os.path.basename(stage_dir)}: pass@1 {summary['pass@1']:.3f}", flush=True)
    return summary


def run_distillation(config, workdir: str) -> dict:
    """Teacher (trained here unless given) -> its correct traces -> the student, fine-tuned on
    them (mode "traces", R1 §4) or distilled on their logits (mode "logits"). Each step resumes
    from its own sub-directory. Returns {"student_base", "teacher", "student"} eval summaries."""
    from r1jax import distill

    os.makedirs(workdir, exist_ok=True)
    teacher = config.teacher
    if not teacher:
        d = os.path.join(workdir, "teacher")
        if not os.path.exists(os.path.join(d, "model", "model_config.json")):
            train.train_and_evaluate(config.teacher_rl, d)
        teacher = os.path.join(d, "model")
    traces = os.path.join(workdir, "traces", "rejection.jsonl")
    if not os.path.exists(traces):
        rc = config.traces.copy_and_resolve_references()
        rc.model.init = teacher
        rejection.rejection_sample(rc, os.path.dirname(traces))
    d = os.path.join(workdir, "student")
    student_base = config.student if config.student != "scratch" else ""
    if not os.path.exists(os.path.join(d, "model", "model_config.json")):
        c = (config.sft if config.mode == "traces" else config.logit).copy_and_resolve_references()
        c.model.init = student_base
        if not student_base:  # a smaller model from scratch, with the teacher's tokenizer
            c.model.overrides = dict(config.student_overrides)
            c.tokenizer.path = checkpoint_tokenizer(teacher)
        c.data.source = "jsonl:" + traces
        if config.mode == "traces":
            sft.train_sft(c, d)
        else:
            c.teacher.init = teacher
            distill.train_distill(c, d)
    results = {}
    for name, model in (
        ("student_base", student_base),
        ("teacher", teacher),
        ("student", os.path.join(d, "model")),
    ):
        if not model:  # a random student: nothing to evaluate
            continue
        out = os.path.join(workdir, f"eval_{name}")
        os.makedirs(out, exist_ok=True)
        results[name] = _evaluate(config, model, out)
    with open(os.path.join(workdir, "distill.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def checkpoint_tokenizer(model_dir: str) -> str:
    from r1jax import checkpoint, runtime

    return checkpoint.tokenizer_path(runtime.resolve_model_path(model_dir))
