"""Benchmark evaluation (launch/eval.py, configs/eval.py): a checkpoint, a dataset with its
template and accuracy reward, R1's sampling protocol, resumable. The metrics themselves
(pass@1, pass@k, cons@k) and the sampling loop live in r1jax/evaluation.py.

`run` writes to WORKDIR: eval_samples.jsonl (one line per sample, appended after every batch),
eval.json (the summary, computed from that file) and eval_meta.json (what is being evaluated; a
resumed run must match it). Samples of question i use the key fold_in(key(seed), i) and every
prompt of a benchmark is padded to one length, so an interrupted run resumes without redoing
finished questions and ends with the same samples. Multi-host: every process samples its share
of each batch; process 0 writes the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict

from r1jax import distributed, evaluation, files, loop, rollout
from r1jax import sharding as shd
from r1jax.data import TASKS, DataError, load_dataset, templates
from r1jax.errors import ConfigError
from r1jax.metrics import progress
from r1jax.models import store
from r1jax.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
SAMPLES, SUMMARY, META = "eval_samples.jsonl", "eval.json", "eval_meta.json"


def check_config(c) -> None:
    """Errors naming the config field, before anything is loaded."""
    s = c.sampling
    if s.num_samples < 1:
        raise ConfigError(f"config.sampling.num_samples: must be >= 1, got {s.num_samples}")
    if s.greedy and s.num_samples != 1:
        raise ConfigError(
            f"config.sampling.num_samples: greedy decoding gives identical samples; use 1, "
            f"not {s.num_samples}"
        )
    for j in c.pass_ks:
        if not 1 <= j <= s.num_samples:
            raise ConfigError(
                f"config.pass_ks: pass@{j} needs at least {j} samples per question, but "
                f"config.sampling.num_samples={s.num_samples}"
            )
    for f in ("num_prompts", "max_new_tokens", "max_prompt_len"):
        if s[f] < 1:
            raise ConfigError(f"config.sampling.{f}: must be >= 1, got {s[f]}")
    if c.data.num_examples < 0:
        raise ConfigError(
            f"config.data.num_examples: must be >= 0 (0: all), got {c.data.num_examples}"
        )
    if c.chat_template not in ("chatml", "model"):
        raise ConfigError(f"config.chat_template: 'chatml' or 'model', got {c.chat_template!r}")


def load_questions(c) -> list[dict]:
    """The dataset's first config.data.num_examples questions (0: all); each needs an answer."""
    d = c.data
    if d.name in TASKS:  # generated: a data seed and task options instead of files
        if d.path or d.data_dir:
            raise ConfigError(f"config.data.path/data_dir: {d.name} is generated, not read")
        data = load_dataset(d.name, d.split, seed=d.seed, **dict(d.kwargs))
    else:
        try:
            data = load_dataset(d.name, d.split, data_dir=d.data_dir or None, path=d.path or None)
        except UnicodeDecodeError:
            raise DataError(f"config.data: {d.path or d.name}: not UTF-8 text") from None
    if not len(data):  # a summary of nothing would say pass@1 NaN, "complete": true
        raise DataError(
            f"config.data: {d.path or d.data_dir or d.name} ({d.split} split) holds no questions"
        )
    n = len(data) if not d.num_examples else min(d.num_examples, len(data))
    questions = [data[i] for i in range(n)]
    for i, ex in enumerate(questions):
        if ex.get("answer") is None or not str(ex["answer"]).strip():
            raise ValueError(
                f"benchmark {c.benchmark!r} ({d.split} split), question {i} (id {ex.get('id')!r}): "
                "no 'answer' field; every evaluation question needs its gold answer"
            )
    return questions


def _fingerprint(path) -> str:
    """Names, sizes and modification times of the checkpoint's files: changes when it does."""
    h = hashlib.sha256()
    root = files.path(path)
    todo, found = [root], []
    while todo:  # a walk by listing (epath refuses recursive globs: costly on GCS)
        for p in todo.pop().iterdir():
            (todo if p.is_dir() else found).append(p)
    for f in sorted(found):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.length}|{st.mtime}\n".encode())
    return h.hexdigest()[:16]


def run_meta(c, model_path) -> dict:
    """What a resumed evaluation must share with the one it continues."""
    conf = json.loads(c.to_json_best_effort())
    meta = {k: conf[k] for k in ("model", "tokenizer", "benchmark", "data", "chat_template")}
    meta.update(
        model_path=str(files.path(model_path)),
        model_files=_fingerprint(model_path),
        rewards=conf["rewards"],
        seed=c.seed,
        sampling={k: v for k, v in conf["sampling"].items() if k != "num_prompts"},
    )
    return meta


def check_meta(workdir, meta: dict) -> None:
    """Writes WORKDIR/eval_meta.json, or refuses when the one there describes another run."""
    path = files.path(workdir) / META
    if not path.exists():
        if (files.path(workdir) / SAMPLES).exists():
            raise ConfigError(
                f"{workdir} has {SAMPLES} but no {META}: not an evaluation of r1jax's evaluate "
                "stage (a training run's workdir?); use another --workdir"
            )
        if distributed.is_main():
            files.write_json(path, meta)
        return
    old = files.read_json(path)
    diffs = [f"{n}: {old.get(n)!r} -> {meta.get(n)!r}" for n in meta if old.get(n) != meta[n]]
    if diffs:
        raise ConfigError(
            f"{path}: this workdir holds an evaluation of something else; refusing to mix "
            f"samples ({'; '.join(diffs)}). Use another --workdir, or delete {SAMPLES}, {SUMMARY} "
            f"and {META} there to start over."
        )


def load_samples(path, questions, k: int) -> list[dict]:
    """Records of the questions with all k samples in the file, in file order. Anything else (a
    question cut short, a half-written last line, repeats) is dropped from the file too."""
    rows = files.read_jsonl(path)
    kept, seen = [], set()
    for lineno, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not {"index", "sample", "id"} <= set(r):
            raise ValueError(f"{path}, line {lineno}: not a sample (needs index, sample, id)")
        i = r["index"]
        if i < len(questions) and r["id"] != questions[i].get("id"):
            raise ConfigError(
                f"{path}, line {lineno}: question {i} has id {r['id']!r} there, but the "
                f"benchmark's question {i} is {questions[i].get('id')!r}; the data changed"
            )
        if (i, r["sample"]) not in seen:
            seen.add((i, r["sample"]))
            kept.append(r)
    samples = defaultdict(set)
    for r in kept:
        samples[r["index"]].add(r["sample"])
    complete = {i for i, s in samples.items() if s == set(range(k))}
    out = [r for r in kept if r["index"] in complete]
    # A torn last line (read_jsonl skips it) must go too, or the next append would continue it.
    text = files.path(path).read_text(encoding="utf-8") if files.path(path).exists() else ""
    torn = not text.endswith("\n") and bool(text)
    if (len(out) != len(rows) or torn) and distributed.is_main():
        files.write_jsonl(path, out)
    return out


def run(config, workdir, *, stop_after: int | None = None) -> dict:
    """Evaluates config.model on config.data into `workdir`; returns the summary.

    Resumes: questions whose k samples are all in WORKDIR/eval_samples.jsonl are not redone.
    `stop_after`: stop once this many questions are finished in this call (whole batches; for
    tests and time-boxed jobs); the summary then has "complete": False.
    """
    c, k = config, config.sampling.num_samples
    check_config(c)
    questions = load_questions(c)
    model_path = store.resolve(c.model.init)
    if not files.path(model_path).is_dir():  # before eval_meta.json fingerprints nothing
        raise FileNotFoundError(f"config.model.init: {c.model.init!r} is not a directory")
    check_meta(workdir, run_meta(c, model_path))
    path = files.path(workdir) / SAMPLES
    done = distributed.gather_objects(
        sorted({r["index"] for r in load_samples(path, questions, k)})
        if distributed.is_main()
        else []
    )[0]
    todo = [i for i in range(len(questions)) if i not in set(done)]
    if todo:
        _sample(c, questions, todo, path, stop_after)
    records = [r for r in load_samples(path, questions, k) if r["index"] < len(questions)]
    summary = evaluation.summarize(records, k, c.pass_ks)
    summary.update(
        benchmark=c.benchmark,
        model=c.model.init,
        complete=summary["num_questions"] == len(questions),
        config=json.loads(c.to_json_best_effort()),
    )
    if distributed.is_main():
        files.write_json(files.path(workdir) / SUMMARY, summary)
    return summary


def _sample(c, questions, todo, path, stop_after) -> None:
    k = c.sampling.num_samples
    mesh = shd.make_mesh(c.mesh)
    cfg, params, tok_dir = store.load_or_init(c.model, mesh)
    tok = load_tokenizer(c.tokenizer.get("path") or tok_dir)
    kw = dict(c.data.template_kwargs)
    if c.data.template == "r1_eval" and c.chat_template == "model":
        kw["render"] = tok.apply_chat_template
    stack = rollout.reward_stack(c)
    bar = progress(len(questions), len(questions) - len(todo), f"eval {c.benchmark}")
    finished = 0

    def on_batch(batch):
        nonlocal finished
        if distributed.is_main():
            files.append_jsonl(path, [{n: v for n, v in r.items() if n != "prompt"} for r in batch])
        finished += len(batch) // k
        bar.update(len(batch) // k)
        # A SIGTERM on any host stops every host after this batch; a rerun resumes here.
        return distributed.any_true(stop.requested) or (
            stop_after is not None and finished >= stop_after
        )

    with loop.StopSignal() as stop:
        try:
            evaluation.evaluate(
                params,
                cfg,
                tok,
                questions,
                stack,
                template=templates.get_template(c.data.template, **kw),
                s=rollout.sampling_config(c.sampling, tok),
                k=k,
                prompts_per_batch=c.sampling.num_prompts,
                max_prompt_len=c.sampling.max_prompt_len,
                mesh=mesh,
                seed=c.seed,
                indices=todo,
                on_batch=on_batch,
                answer_rule=evaluation.answer_rule(c.rewards),
            )
        finally:
            bar.close()
            stack.pool.close()
