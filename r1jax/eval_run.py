"""Benchmark evaluation runs (launch/eval.py, configs/eval.py): a checkpoint, a benchmark, R1's
sampling protocol, resumable. The metrics themselves live in r1jax/eval.py.

`run` writes to WORKDIR: eval_samples.jsonl (one line per sample, appended after every batch),
eval.json (the summary, computed from that file) and eval_meta.json (what is being evaluated; a
resumed run must match it). Samples of question i use the key fold_in(key(seed), i) and every
prompt of a benchmark is padded to one length, so an interrupted run resumes without redoing
finished questions and ends with the same samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict

from r1jax import checkpoint, runtime, sampling
from r1jax.config_checks import ConfigError
from r1jax.data import load_dataset, templates
from r1jax.eval import META, SAMPLES, SUMMARY, evaluate, summarize
from r1jax.metrics import progress
from r1jax.rewards import RewardPool, RewardStack

log = logging.getLogger(__name__)

# name -> (dataset for load_dataset, split, prompt template, accuracy reward)
BENCHMARKS = {
    "gsm8k": ("gsm8k", "test", "r1_eval", "math"),
    "math500": ("math500", "test", "r1_eval", "math"),
    "aime2024": ("aime2024", "test", "r1_eval", "math"),
    "countdown": ("countdown", "test", "tinyzero_countdown", "countdown"),
    "sumchain": ("sumchain", "test", "r1zero", "math"),
}
PROCEDURAL = ("countdown", "sumchain")  # generated tasks: no files, a data seed instead


def check_config(c) -> None:
    """Errors naming the config field, before anything is loaded."""
    if c.benchmark not in BENCHMARKS:
        raise ConfigError(f"config.benchmark: unknown {c.benchmark!r}; known: {list(BENCHMARKS)}")
    if c.k < 1:
        raise ConfigError(f"config.k: samples per question must be >= 1, got {c.k}")
    if c.greedy and c.k != 1:
        raise ConfigError(f"config.k: greedy decoding gives identical samples; use k=1, not {c.k}")
    for j in c.pass_ks:
        if not 1 <= j <= c.k:
            raise ConfigError(
                f"config.pass_ks: pass@{j} needs at least {j} samples per question, but "
                f"config.k={c.k}"
            )
    for f in ("prompts_per_batch", "max_new_tokens", "max_prompt_len"):
        if c[f] < 1:
            raise ConfigError(f"config.{f}: must be >= 1, got {c[f]}")
    if c.num_questions < 0:
        raise ConfigError(f"config.num_questions: must be >= 0 (0: all), got {c.num_questions}")
    if c.chat_template not in ("chatml", "model"):
        raise ConfigError(f"config.chat_template: 'chatml' or 'model', got {c.chat_template!r}")


def load_questions(c) -> list[dict]:
    """The benchmark's first config.num_questions questions (0: all); each needs an answer."""
    name, split, _, _ = BENCHMARKS[c.benchmark]
    d = c.data
    split = d.split or split
    if c.benchmark in PROCEDURAL:
        if d.path or d.data_dir:
            raise ConfigError(f"config.data.path/data_dir: {c.benchmark} is generated, not read")
        data = load_dataset(name, split, seed=d.seed, **_plain(d.kwargs))
    else:
        data = load_dataset(name, split, data_dir=d.data_dir or None, path=d.path or None)
    n = len(data) if not c.num_questions else min(c.num_questions, len(data))
    questions = [data[i] for i in range(n)]
    for i, ex in enumerate(questions):
        if ex.get("answer") is None or not str(ex["answer"]).strip():
            raise ValueError(
                f"benchmark {c.benchmark!r} ({split} split), question {i} (id {ex.get('id')!r}): "
                "no 'answer' field; every evaluation question needs its gold answer"
            )
    return questions


def _fingerprint(path: str) -> str:
    """Names, sizes and modification times of the checkpoint's files: changes when it does."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            h.update(
                f"{os.path.relpath(os.path.join(root, f), path)}|{st.st_size}|"
                f"{st.st_mtime_ns}\n".encode()
            )
    return h.hexdigest()[:16]


def run_meta(c, model_path: str) -> dict:
    """What a resumed evaluation must share with the one it continues."""
    greedy = bool(c.greedy)
    meta = {
        "model": os.path.abspath(model_path),
        "model_files": _fingerprint(model_path),
        "model_overrides": _plain(c.model_overrides),
        "tokenizer": c.tokenizer,
        "benchmark": c.benchmark,
        "data": _plain(c.data),
        "template": c.template or BENCHMARKS[c.benchmark][2],
        "template_kwargs": _plain(c.template_kwargs),
        "chat_template": c.chat_template,
        "reward_kwargs": _plain(c.reward_kwargs),
        "k": c.k,
        "seed": c.seed,
        "greedy": greedy,
        "temperature": 0.0 if greedy else c.temperature,
        "top_p": 1.0 if greedy else c.top_p,
        "top_k": 0 if greedy else c.top_k,
        "max_new_tokens": c.max_new_tokens,
        "stop": list(c.stop),
    }
    return json.loads(json.dumps(meta))


def check_meta(workdir: str, meta: dict) -> None:
    """Writes WORKDIR/eval_meta.json, or refuses when the one there describes another run."""
    path = os.path.join(workdir, META)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(workdir, SAMPLES)):
            raise ConfigError(
                f"{workdir} has {SAMPLES} but no {META}: not an evaluation of r1jax.eval.run "
                "(a training run's workdir?); use another --workdir"
            )
        _write_json(path, meta)
        return
    with open(path) as f:
        old = json.load(f)
    diffs = [f"{n}: {old.get(n)!r} -> {meta.get(n)!r}" for n in meta if old.get(n) != meta[n]]
    if diffs:
        raise ConfigError(
            f"{path}: this workdir holds an evaluation of something else; refusing to mix "
            f"samples ({'; '.join(diffs)}). Use another --workdir, or delete {SAMPLES}, {SUMMARY} "
            f"and {META} there to start over."
        )


def _plain(x) -> dict:
    return x.to_dict() if hasattr(x, "to_dict") else dict(x or {})


def _write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def load_samples(path: str, questions, k: int) -> list[dict]:
    """Records of the questions with all k samples in the file, in file order. Anything else (a
    question cut short, a half-written last line, repeats) is dropped from the file too."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().splitlines()
    rows, seen = [], set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):  # the interruption cut the last write short
                break
            raise ValueError(f"{path}, line {lineno}: not valid JSON") from None
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
            rows.append((line, r))
    samples = defaultdict(set)
    for _, r in rows:
        samples[r["index"]].add(r["sample"])
    complete = {i for i, s in samples.items() if s == set(range(k))}
    kept = [(line, r) for line, r in rows if r["index"] in complete]
    if len(kept) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(line + "\n" for line, _ in kept)
        os.replace(path + ".tmp", path)
    return [r for _, r in kept]


def sampling_config(c, tokenizer) -> sampling.SamplingConfig:
    return sampling.SamplingConfig(
        max_new_tokens=c.max_new_tokens,
        temperature=0.0 if c.greedy else c.temperature,
        top_p=1.0 if c.greedy else c.top_p,
        top_k=0 if c.greedy else c.top_k,
        chunk=c.chunk,
        eos_ids=tuple(tokenizer.eos_ids),
        stop_sequences=tuple(tuple(tokenizer.encode(t)) for t in c.stop),
        pad_id=tokenizer.pad_id,
    )


def run(config, workdir: str, *, stop_after: int | None = None) -> dict:
    """Evaluates config.model on config.benchmark into `workdir`; returns the summary.

    Resumes: questions whose k samples are all in WORKDIR/eval_samples.jsonl are not redone.
    `stop_after`: stop once this many questions are finished in this call (whole batches; for
    tests and time-boxed jobs); the summary then has "complete": False.
    """
    c = config
    check_config(c)
    os.makedirs(workdir, exist_ok=True)
    questions = load_questions(c)
    model_path = runtime.resolve_model_path(c.model)
    if not os.path.isdir(model_path):  # before eval_meta.json records a fingerprint of nothing
        raise FileNotFoundError(f"config.model: {c.model!r} ({model_path}) is not a directory")
    check_meta(workdir, run_meta(c, model_path))
    path = os.path.join(workdir, SAMPLES)
    done = {r["index"] for r in load_samples(path, questions, c.k)}
    todo = [i for i in range(len(questions)) if i not in done]
    if todo:
        mesh = runtime.make_mesh(c)
        cfg, params = checkpoint.load_model(model_path, mesh, **_plain(c.model_overrides))
        tok = runtime.load_tok(c.tokenizer or checkpoint.tokenizer_path(model_path))
        name = c.template or BENCHMARKS[c.benchmark][2]
        kw = _plain(c.template_kwargs)
        if name == "r1_eval" and c.chat_template == "model":
            kw["render"] = tok.apply_chat_template
        reward_kw = _plain(c.reward_kwargs)
        stack = RewardStack(
            [dict(name=BENCHMARKS[c.benchmark][3], kwargs=reward_kw)],
            pool=RewardPool(workers=c.reward_workers, timeout_s=c.reward_timeout_s),
        )
        bar = progress(len(questions), len(questions) - len(todo), f"eval {c.benchmark}")
        finished = 0

        def on_batch(batch):
            nonlocal finished
            with open(path, "a") as f:
                f.writelines(
                    json.dumps({n: v for n, v in r.items() if n != "prompt"}) + "\n" for r in batch
                )
            finished += len(batch) // c.k
            bar.update(len(batch) // c.k)
            return stop_after is not None and finished >= stop_after

        try:
            evaluate(
                params,
                cfg,
                tok,
                questions,
                stack,
                template=templates.get_template(name, **kw),
                s=sampling_config(c, tok),
                k=c.k,
                prompts_per_batch=c.prompts_per_batch,
                max_prompt_len=c.max_prompt_len,
                seed=c.seed,
                indices=todo,
                on_batch=on_batch,
                answer_fallback="last_number" if reward_kw.get("last_number_fallback") else "none",
            )
        finally:
            bar.close()
            stack.pool.close()
    records = [r for r in load_samples(path, questions, c.k) if r["index"] < len(questions)]
    summary = summarize(records, c.k, c.pass_ks)
    summary.update(
        benchmark=c.benchmark,
        model=c.model,
        complete=summary["num_questions"] == len(questions),
        config=json.loads(c.to_json_best_effort()),
    )
    _write_json(os.path.join(workdir, SUMMARY), summary)
    return summary
