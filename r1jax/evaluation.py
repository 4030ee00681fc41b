"""Evaluation with the paper's protocol (R1 §5): k samples per question at T=0.6, top-p 0.95.

Metrics, for questions i with n = k samples of which c_i are correct (the task's accuracy reward,
RewardStack.correct):
- pass@1 = mean_i c_i / k, the paper's "(1/k) sum_i p_i": the mean correctness of all samples.
- pass@j (j <= k): Chen et al. (2021, Codex) unbiased estimator 1 - C(n-c, j) / C(n, j),
  averaged over questions.
- cons@k: majority vote over the extracted final answers (rewards.math.extract_answer); answers
  that rewards.math.answers_equivalent finds equal ("0.5", "\\frac{1}{2}") are one bucket. That
  check is symmetric and strict: an equation and its value ("x=3", "3"), an ordered pair and a
  set, numbers in different bases or units are different answers and vote apart (a split vote
  is the price of never merging different answers). An
  answer joins the first bucket whose first answer it is equivalent to; no answer (None) does not
  vote. Ties go to the bucket opened first (its first answer has the lowest sample index), so the
  vote is a deterministic function of the samples. A question counts as solved when the first
  sample of the winning bucket is correct; with no answer at all it is not. `evaluate` runs the
  equivalence checks in the reward pool (`vote`), so a pathological answer is timed out there.

Samples of question i use the key fold_in(key(seed), i) with either decoder (sampling.decoder;
the continuous one refills its slots across a batch's questions), and every prompt of a
benchmark is padded to one length, so a question's samples do not depend on which questions
share its batch: an interrupted `run` resumes without redoing finished questions and ends with
the same samples.

`evaluate` is what GRPO's periodic evaluation and the evaluate stage (r1jax/stages/evaluate.py:
a checkpoint on a benchmark, resumably) call. Multi-host: each batch of questions is split over
the processes; each samples and scores its own questions, and the records of every host are
gathered, so every process returns the same summary over all questions.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import defaultdict

import jax
import numpy as np

from r1jax import continuous, distributed, rollout, sampling
from r1jax import sharding as shd
from r1jax.rewards.math import answers_equivalent, extract_answer

log = logging.getLogger(__name__)


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


def answer_rule(rewards) -> dict:
    """extract_answer's keywords matching a config's `rewards.accuracy` (math_accuracy's
    `last_number_fallback` and `boxes`), so that cons@k votes on the answers the reward reads."""
    kw = rewards.accuracy.get("kwargs", {}) if "accuracy" in rewards else {}
    return {
        "fallback": "last_number" if kw.get("last_number_fallback", False) else "none",
        "boxes": kw.get("boxes", "final"),
    }


def vote(answer_lists, pool) -> list[int | None]:
    """Majority-vote winners (sample indices) of several questions at once.

    The equivalence checks are answers_equivalent's (symmetric, so once per pair), run in `pool`
    (a RewardPool) as the reward function rewards.math.answers_agree: a pathological answer (a
    power tower sympy would expand) then times out as "not equivalent" instead of hanging the
    evaluation. Answers that cannot be parsed at all only match identical text.
    """
    pairs = sorted(
        {p for answers in answer_lists for p in itertools.combinations(_distinct(answers), 2)}
    )
    values = (
        pool.map(_AGREE, [""] * len(pairs), [a for a, _ in pairs], answer=[b for _, b in pairs])
        if pairs
        else []
    )
    same = {p for p, v in zip(pairs, values) if v == 1.0}
    return [majority_vote(a, lambda x, y: (min(x, y), max(x, y)) in same)[0] for a in answer_lists]


_AGREE = "r1jax.rewards.math:answers_agree"


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
    ids = [tokenizer.encode_prompt(t) for t in texts]
    lens = [len(i) for i in ids]
    if max(lens) > max_prompt_len:
        i = int(np.argmax(lens))
        raise ValueError(
            f"question {i} (id {examples[i].get('id')!r}): prompt has {lens[i]} tokens, more than "
            f"max_prompt_len={max_prompt_len}"
        )
    return texts, ids, min(sampling.bucket(max(lens)), max_prompt_len)


@functools.lru_cache(maxsize=16)
def _sampler(cfg, s, k: int, out_shardings):
    """k samples of each prompt, keyed by its question index i (key fold_in(key(seed), i)): the
    static decoder runs each prompt alone (vmap); the continuous one (s.decoder) runs the batch
    in its slots with one key per prompt, which gives the same rows."""

    def run(params, tokens_BP, mask_BP, index_B, seed):
        keys_B = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(index_B)
        if s.decoder == "continuous":
            return continuous.generate(
                params, tokens_BP, mask_BP, keys_B, cfg=cfg, s=s, group_size=k
            )

        def one(tokens_P, mask_P, key):
            return sampling.generate(
                params, tokens_P[None], mask_P[None], key, cfg=cfg, s=s, group_size=k
            )

        out = jax.vmap(one)(tokens_BP, mask_BP, keys_B)
        return {n: v.reshape((-1, *v.shape[2:])) for n, v in out.items()}

    return jax.jit(run, out_shardings=dict(out_shardings), static_argnums=(4,))


def _sample(params, cfg, s, k, tokens, mask, index, seed, mesh):
    """This process's rows of k samples for each of its questions (a slice of the batch)."""
    B, P = len(index), tokens.shape[1]
    mine = rollout.my_prompts(mesh, B, "eval prompts_per_batch")
    sh = rollout.prompt_sharding(mesh, B, P)
    one = shd.named_sharding(("batch",), (B,), mesh)
    args = (
        distributed.global_array(tokens[mine], sh, (B, P)),
        distributed.global_array(mask[mine], sh, (B, P)),
        distributed.global_array(index[mine], one, (B,)),
    )
    rows = tuple(sorted(rollout.row_shardings(mesh, B * k, s.max_new_tokens).items()))
    out = _sampler(cfg, s, k, rows)(params, *args, seed)
    return mine, {n: distributed.local_data(v) for n, v in out.items()}


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
    mesh,
    seed: int = 0,
    pass_ks=(),
    indices=None,
    on_batch=None,
    answer_rule: dict | None = None,
):
    """Samples k completions for each question (those at `indices`, default all) and scores them.

    Returns (summary, per-sample records of every host); see `summarize` for the summary keys
    ("pass@1", "completion_len", "truncated_frac", f"cons@{k}", ...). `on_batch(records)` runs
    after each batch (to append to a file, move a bar); when it returns True, evaluation stops.
    `answer_rule`: extract_answer's keywords for the voted answers (`answer_rule(rewards)`, so
    that cons@k reads answers as the accuracy reward does); default: boxed or tagged, last box.
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
        index = np.asarray(padded, np.int32)
        mine, out = _sample(params, cfg, s, k, tokens, mask, index, seed, mesh)
        real = [q for q in range(mine.start, mine.stop) if q < len(idx)]  # padding copies dropped
        out = {n: v[: len(real) * k] for n, v in out.items()}
        qs = [idx[q] for q in real]
        batch = _score(examples, texts, qs, out, tokenizer, stack, k, answer_rule or {})
        batch = [r for part in distributed.gather_objects(batch) for r in part]
        records += batch
        if on_batch is not None and on_batch(batch):
            break
    return summarize(records, k, pass_ks), records


def _score(examples, texts, qs, out, tok, stack, k, answer_rule: dict) -> list[dict]:
    """Records of this process's questions `qs` (k rows each in `out`)."""
    if not qs:
        return []
    comps = rollout.decode_completions(out, tok)
    exs = [examples[i] for i in qs]
    prompts = [texts[i] for i in qs for _ in range(k)]
    res = stack(prompts, comps, rollout.reward_fields(exs, k, out))
    answers = [extract_answer(comp, **{"fallback": "none", **answer_rule}) for comp in comps]
    winners = vote([answers[q * k : (q + 1) * k] for q in range(len(qs))], stack.pool)
    batch = []
    for n, comp in enumerate(comps):
        reward = float(res.total[n])
        batch.append(
            {
                "index": qs[n // k],
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
    return batch
