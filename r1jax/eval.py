"""Evaluation with the paper's protocol (R1 §5): k samples per question at T=0.6, top-p 0.95.

Metrics, for questions i with n = k samples of which c_i are correct (the task's accuracy reward,
RewardStack.correct):
- pass@1 = mean_i c_i / k, the paper's "(1/k) sum_i p_i": the mean correctness of all samples.
- pass@j (j <= k): Chen et al. (2021, Codex) unbiased estimator 1 - C(n-c, j) / C(n, j),
  averaged over questions.
- cons@k: majority vote over the extracted final answers (rewards.math.extract_answer); answers
  that rewards.math.answers_equivalent finds equal ("0.5", "\\frac{1}{2}") are one bucket. An
  answer joins the first bucket whose first answer it is equivalent to; no answer (None) does not
  vote. Ties go to the bucket opened first (its first answer has the lowest sample index), so the
  vote is a deterministic function of the samples. A question counts as solved when the first
  sample of the winning bucket is correct; with no answer at all it is not. `evaluate` runs the
  equivalence checks in the reward pool (`vote`), so a pathological answer is timed out there.

Samples of question i use the key fold_in(key(seed), i), and every prompt of a benchmark is
padded to one length, so a question's samples do not depend on which questions share its batch:
an interrupted `run` resumes without redoing finished questions and ends with the same samples.

`evaluate` is what the training loop calls. `run` (launch/eval.py, configs/eval.py) evaluates a
checkpoint on a benchmark and writes to WORKDIR: eval_samples.jsonl (one line per sample, appended
after every batch), eval.json (the summary, computed from that file) and eval_meta.json (what is
being evaluated; a resumed run must match it).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
from collections import defaultdict

import jax
import numpy as np

from r1jax import checkpoint, runtime, sampling
from r1jax.config_checks import ConfigError
from r1jax.data import load_dataset, templates
from r1jax.metrics import progress
from r1jax.rewards import RewardPool, RewardStack
from r1jax.rewards.math import answers_equivalent, extract_answer
from r1jax.rl import experience

log = logging.getLogger(__name__)

SAMPLES, SUMMARY, META = "eval_samples.jsonl", "eval.json", "eval_meta.json"
# name -> (dataset for load_dataset, split, prompt template, accuracy reward)
BENCHMARKS = {
    "gsm8k": ("gsm8k", "test", "r1_eval", "math"),
    "math500": ("math500", "test", "r1_eval", "math"),
    "aime2024": ("aime2024", "test", "r1_eval", "math"),
    "countdown": ("countdown", "test", "tinyzero_countdown", "countdown"),
    "sumchain": ("sumchain", "test", "r1zero", "math"),
}
PROCEDURAL = ("countdown", "sumchain")  # generated tasks: no files, a data seed instead


# -- metrics --------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i) (the Codex paper's form), which never forms the
    binomials, so it is exact to float rounding for any n.
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k: k={k} must be between 1 and the n={n} samples per question")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: the correct count c={c} must be between 0 and n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers, equivalent=answers_equivalent) -> tuple[int | None, int]:
    """(sample index of the winning bucket's first answer, its votes), or (None, 0) when no
    sample has an answer. Buckets and ties as in the module docstring; `equivalent(a, b)` is
    called on stripped answers, never on identical ones."""
    texts = [a.strip() if a else "" for a in answers]
    first: list[int] = []  # per bucket: index of its first answer
    votes: list[int] = []
    seen: dict[str, int] = {}  # answer text -> bucket (repeats are not compared again)
    for i, a in enumerate(texts):
        if not a:
            continue
        b = seen.get(a)
        if b is None:
            b = next((j for j, f in enumerate(first) if equivalent(texts[f], a)), None)
            if b is None:
                first.append(i)
                votes.append(0)
                b = len(first) - 1
            seen[a] = b
        votes[b] += 1
    if not first:
        return None, 0
    best = max(range(len(first)), key=lambda b: (votes[b], -b))
    return first[best], votes[best]


def vote(answer_lists, pool) -> list[int | None]:
    """Majority-vote winners (sample indices) of several questions at once.

    The equivalence checks are answers_equivalent's (math-verify, both ways), run in `pool` (a
    RewardPool) as the math reward on "\\boxed{a}" with gold b and on b with gold a: a
    pathological answer (a power tower sympy would expand) then times out as "not equivalent"
    instead of hanging the evaluation. Answers that math-verify cannot parse at all only match
    identical text.
    """
    pairs = sorted(
        {p for answers in answer_lists for p in itertools.permutations(_distinct(answers), 2)}
    )
    boxed = ["\\boxed{" + a + "}" for a, _ in pairs]
    values = (
        pool.map("math", [""] * len(pairs), boxed, answer=[b for _, b in pairs]) if pairs else []
    )
    same = {p for p, v in zip(pairs, values) if v == 1.0}
    return [
        majority_vote(a, lambda x, y: (x, y) in same or (y, x) in same)[0] for a in answer_lists
    ]


def _distinct(answers) -> list[str]:
    return sorted({a.strip() for a in answers if a and a.strip()})


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def summarize(records, k: int, pass_ks=()) -> dict:
    """Summary of per-sample records (fields index, sample, correct, answer, length, truncated);
    every question must have samples 0..k-1. Order-independent: questions are sorted."""
    by_q: dict = defaultdict(dict)
    for r in records:
        by_q[r["index"]][r["sample"]] = r
    for q, samples in by_q.items():
        if sorted(samples) != list(range(k)):
            raise ValueError(f"question {q}: has samples {sorted(samples)}, expected 0..{k - 1}")
    rows = [[by_q[q][j] for j in range(k)] for q in sorted(by_q)]
    correct = np.array([[r["correct"] for r in row] for row in rows], bool).reshape(-1, k)
    c = correct.sum(1)
    flat = [r for row in rows for r in row]
    out = {
        "pass@1": _mean(correct.ravel()),
        "completion_len": _mean([r["length"] for r in flat]),
        "truncated_frac": _mean([r["truncated"] for r in flat]),
    }
    for j in sorted(set(pass_ks) - {1}):
        if not 1 <= j <= k:
            raise ValueError(f"pass_ks: pass@{j} needs at least {j} samples per question, k={k}")
        out[f"pass@{j}"] = _mean([pass_at_k(k, int(ci), j) for ci in c])
    if all("voted_sample" in r for r in flat):  # voted during evaluate(), with timeouts
        winners = [row[0]["voted_sample"] for row in rows]
    else:
        winners = [majority_vote([r.get("answer") for r in row])[0] for row in rows]
    out[f"cons@{k}"] = _mean([w is not None and row[w]["correct"] for w, row in zip(winners, rows)])
    per_q = c / k
    out["pass@1_stderr"] = float(per_q.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else 0.0
    out["answered_frac"] = _mean([r.get("answer") is not None for r in flat])
    out.update(num_questions=len(rows), num_samples=len(flat), num_correct=int(c.sum()), k=k)
    return out


# -- sampling and scoring -------------------------------------------------------------------------


def encode_questions(examples, template, tokenizer, max_prompt_len: int):
    """Prompt texts and token ids of every question, and the one length they are all padded to."""
    texts = [template(ex) for ex in examples]
    ids = [tokenizer.encode(t, add_bos=True) for t in texts]
    lens = [len(i) for i in ids]
    if max(lens) > max_prompt_len:
        i = int(np.argmax(lens))
        raise ValueError(
            f"question {i} (id {examples[i].get('id')!r}): prompt has {lens[i]} tokens, more than "
            f"max_prompt_len={max_prompt_len}"
        )
    return texts, ids, min(sampling.bucket(max(lens)), max_prompt_len)


@functools.partial(jax.jit, static_argnames=("cfg", "s", "k"))
def _generate(params, tokens_BP, mask_BP, index_B, seed, *, cfg, s, k):
    """sampling.generate for each prompt alone (vmap), keyed by its question index."""
    base = jax.random.key(seed)

    def one(tokens_P, mask_P, i):
        key = jax.random.fold_in(base, i)
        return sampling.generate(
            params, tokens_P[None], mask_P[None], key, cfg=cfg, s=s, group_size=k
        )

    out = jax.vmap(one)(tokens_BP, mask_BP, index_B)
    return {n: v.reshape((-1, *v.shape[2:])) for n, v in out.items()}


def evaluate(
    params,
    cfg,
    tokenizer,
    examples,
    stack,
    *,
    template,
    s: sampling.SamplingConfig,
    k: int,
    prompts_per_batch: int,
    max_prompt_len: int,
    seed: int = 0,
    pass_ks=(),
    indices=None,
    on_batch=None,
    answer_fallback: str = "none",
):
    """Samples k completions for each question (those at `indices`, default all) and scores them.

    Returns (summary, per-sample records); see `summarize` for the summary keys ("pass@1",
    "completion_len", "truncated_frac", f"cons@{k}", ...). `on_batch(records)` runs after each
    batch (to append to a file, move a bar); when it returns True, evaluation stops there.
    `answer_fallback` is extract_answer's fallback for the voted answers (match the reward's).
    """
    if k < 1:
        raise ValueError(f"k (samples per question) must be >= 1, got {k}")
    if prompts_per_batch < 1:
        raise ValueError(f"prompts_per_batch must be >= 1, got {prompts_per_batch}")
    if s.temperature == 0 and k > 1:
        log.warning("greedy decoding (temperature 0) with k=%d: all samples are identical", k)
    examples = list(examples)
    if not examples:
        return summarize([], k, pass_ks), []
    texts, ids, length = encode_questions(examples, template, tokenizer, max_prompt_len)
    todo = list(range(len(examples))) if indices is None else [int(i) for i in indices]
    records = []
    for start in range(0, len(todo), prompts_per_batch):
        idx = todo[start : start + prompts_per_batch]
        padded = idx + [idx[-1]] * (prompts_per_batch - len(idx))  # one shape, one compilation
        tokens, mask = sampling.pad_prompts([ids[i] for i in padded], tokenizer.pad_id, length)
        out = _generate(params, tokens, mask, np.asarray(padded, np.int32), seed, cfg=cfg, s=s, k=k)
        out = {n: np.asarray(v)[: len(idx) * k] for n, v in jax.device_get(out).items()}
        comps = experience.decode_completions(out, tokenizer)
        exs = [examples[i] for i in idx]
        prompts = [texts[i] for i in idx for _ in range(k)]
        res = stack(prompts, comps, experience.reward_fields(exs, k, out))
        answers = [extract_answer(comp, fallback=answer_fallback) for comp in comps]
        winners = vote([answers[q * k : (q + 1) * k] for q in range(len(idx))], stack.pool)
        batch = []
        for n, comp in enumerate(comps):
            reward = float(res.total[n])
            batch.append(
                {
                    "index": idx[n // k],
                    "id": exs[n // k].get("id"),
                    "sample": n % k,
                    "prompt": prompts[n],
                    "completion": comp,
                    "answer": answers[n],
                    "correct": bool(res.correct[n]),
                    "reward": reward if np.isfinite(reward) else None,  # None: not judged
                    "length": int(out["length"][n]),
                    "truncated": bool(out["truncated"][n]),
                    "voted_sample": winners[n // k],  # cons@k's pick for this question
                }
            )
        records += batch
        if on_batch is not None and on_batch(batch):
            break
    return summarize(records, k, pass_ks), records


# -- the standalone, resumable evaluation -----------------------------------------------------


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
