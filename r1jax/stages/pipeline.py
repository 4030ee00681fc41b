"""Recipes made of stages: the four-stage R1 pipeline (R1 §3, Nature Fig. 2) and distillation
(R1 §4). The one place where stages meet: each is called through its public `run`.

  base --(1) cold-start SFT--> Dev1 --(2) reasoning RL--> Dev2 --(3) rejection sampling,
  then SFT *from the base*--> Dev3 --(4) all-scenario RL (rules + reward model, T=0.7)--> R1

Every stage runs on a sub-config of configs/r1.py in its own sub-directory WORKDIR/<n>_<stage>/
(a `model/` directory, metrics, checkpoints); a `DONE` file marks it finished, so a rerun skips
finished stages and resumes an interrupted one from its checkpoints (each stage auto-resumes,
and refuses a changed config). After each stage the model is evaluated on the held-out split
(eval.json in the stage directory); pipeline.json collects them.
"""

from __future__ import annotations

import logging
import random

from r1jax import distributed, files
from r1jax.data import embedded, templates
from r1jax.models import store
from r1jax.stages import distill, evaluate, grpo, rejection, reward_model, sft

log = logging.getLogger(__name__)
STAGES = ("cold_start", "reasoning_rl", "rejection_sft", "all_scenario_rl")


def _write_jsonl(path, rows) -> str:
    if distributed.is_main():
        files.write_jsonl(path, rows)
    distributed.barrier("pipeline_data")
    return str(path)


def embedded_cold_start(path, n: int, seed: int = 0) -> str:
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


def embedded_preferences(path, n: int, seed: int = 0) -> str:
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


def _evaluate(config, model_dir, out_dir) -> dict:
    ec = config.eval.copy_and_resolve_references()
    ec.model.init = str(model_dir)
    summary = evaluate.run(ec, files.path(out_dir) / "eval")
    if distributed.is_main():
        files.write_json(files.path(out_dir) / "eval.json", summary)
    return summary


class Stopped(Exception):
    """A stage stopped before its end (SIGTERM): the pipeline stops too; a rerun resumes."""


def _finished(output):
    """`output` of a stage that must have finished; Stopped if it was stopped instead."""
    if not output.exists():
        raise Stopped(str(output))
    return output


def _finish(config, stage_dir) -> dict:
    """Evaluates a finished stage once (cached in eval.json) and marks it DONE."""
    done = stage_dir / "DONE"
    if done.exists():
        return files.read_json(stage_dir / "eval.json")
    if not (stage_dir / "model").exists():
        raise Stopped(stage_dir.name)
    summary = _evaluate(config, stage_dir / "model", stage_dir)
    if distributed.is_main():
        files.write_text(done, "ok\n")
        print(f"{stage_dir.name}: pass@1 {summary['pass@1']:.3f}", flush=True)
    return summary


def run_pipeline(config, workdir) -> dict:
    """Runs (or resumes) the four stages; returns {stage: eval summary} of the finished ones
    (all four, unless a SIGTERM stopped one: rerun to resume)."""
    results: dict = {}
    try:
        _stages(config, files.path(workdir), results)
    except Stopped as e:
        log.warning("pipeline stopped in stage %s; rerun the same command to resume", e)
    return results


def _stages(config, wd, results: dict) -> None:
    d = {name: wd / f"{i + 1}_{name}" for i, name in enumerate(STAGES)}
    base = config.base

    # 1. Cold start: SFT of the base on a small set of long, readable CoT examples.
    if not (d["cold_start"] / "DONE").exists():
        c = config.cold_start.copy_and_resolve_references()
        c.model.init = base
        if c.data.name == "embedded_cold_start":
            path = d["cold_start"] / "cold_start.jsonl"
            c.data.name = "jsonl:" + embedded_cold_start(path, config.cold_start_examples)
        sft.run(c, d["cold_start"])
    results["cold_start"] = _finish(config, d["cold_start"])

    # 2. Reasoning RL from Dev1: rule rewards + language consistency.
    if not (d["reasoning_rl"] / "DONE").exists():
        c = config.reasoning_rl.copy_and_resolve_references()
        c.model.init = str(d["cold_start"] / "model")
        grpo.run(c, d["reasoning_rl"])
    results["reasoning_rl"] = _finish(config, d["reasoning_rl"])

    # 3. Rejection sampling from Dev2, then SFT of the *base* on the kept samples.
    s3 = d["rejection_sft"]
    if not (s3 / "DONE").exists():
        rc = config.rejection.copy_and_resolve_references()
        rc.model.init = str(d["reasoning_rl"] / "model")
        data = s3 / "rejection" / "rejection.jsonl"
        if not data.exists() and rejection.run(rc, s3 / "rejection").get("stopped"):
            raise Stopped("3_rejection_sft")
        c = config.rejection_sft.copy_and_resolve_references()
        c.model.init = base
        c.data.name = f"jsonl:{data}"
        sft.run(c, s3)
    results["rejection_sft"] = _finish(config, s3)

    # 4. All-scenario RL from Dev3: rules + a reward model on the summary, temperature 0.7.
    s4 = d["all_scenario_rl"]
    if not (s4 / "DONE").exists():
        rm_dir = s4 / "reward_model"
        if not (rm_dir / "reward_model").exists():
            mc = config.reward_model.copy_and_resolve_references()
            mc.model.init = base
            if mc.data.name == "jsonl:embedded_preferences":
                pairs = embedded_preferences(rm_dir / "pairs.jsonl", config.preference_pairs)
                mc.data.name = "jsonl:" + pairs
            reward_model.run(mc, rm_dir)
        c = config.all_scenario_rl.copy_and_resolve_references()
        c.model.init = str(d["rejection_sft"] / "model")
        c.rewards.helpful.kwargs.checkpoint = str(rm_dir / "reward_model")
        grpo.run(c, s4)
    results["all_scenario_rl"] = _finish(config, s4)
    if distributed.is_main():
        files.write_json(wd / "pipeline.json", results)


def run_distillation(config, workdir) -> dict:
    """Teacher (trained here unless given) -> its correct traces -> the student, fine-tuned on
    them (mode "traces", R1 §4) or distilled on their logits (mode "logits"). Each step resumes
    from its own sub-directory. Returns {"student_base", "teacher", "student"} eval summaries."""
    try:
        return _distillation(config, files.path(workdir))
    except Stopped as e:
        log.warning("distillation stopped in %s; rerun the same command to resume", e)
        return {}


def _distillation(config, wd) -> dict:
    teacher = config.teacher
    if not teacher:
        if not (wd / "teacher" / "model" / store.MODEL_CONFIG).exists():
            grpo.run(config.teacher_rl, wd / "teacher")
        teacher = str(_finished(wd / "teacher" / "model"))
    traces = wd / "traces" / "rejection.jsonl"
    if not traces.exists():
        rc = config.traces.copy_and_resolve_references()
        rc.model.init = teacher
        rejection.run(rc, traces.parent)
        _finished(traces)
    student = wd / "student"
    student_base = config.student if config.student != "scratch" else ""
    if not (student / "model" / store.MODEL_CONFIG).exists():
        logits = config.mode == "logits"
        c = (config.logit if logits else config.sft).copy_and_resolve_references()
        c.model.init = student_base
        if not student_base:  # a smaller model from scratch, with the teacher's tokenizer
            arch = {k: v for k, v in config.student_overrides.items() if v is not None}
            c.model.overrides.update(arch)
            c.tokenizer.path = store.tokenizer_path(teacher)
        c.data.name = f"jsonl:{traces}"
        c.data.num_examples = 0
        if logits:
            c.teacher.init = teacher
            distill.run(c, student)
        else:
            sft.run(c, student)
        _finished(student / "model")
    results = {}
    for name, model in (
        ("student_base", student_base),
        ("teacher", teacher),
        ("student", str(student / "model")),
    ):
        if model:  # a random student has nothing to evaluate
            results[name] = _evaluate(config, model, wd / f"eval_{name}")
    if distributed.is_main():
        files.write_json(wd / "distill.json", results)
    return results
