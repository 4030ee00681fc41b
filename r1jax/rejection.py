"""Rejection sampling into an SFT dataset (R1 stage 3, and the teacher traces of distillation).

  python launch/rejection_sample.py --config=configs/rejection.py --workdir=DIR

For every prompt of a dataset: sample N completions from a checkpoint (`sampling.generate` with
group_size=N, prompts in fixed-size batches), score them with the rule rewards (a RewardStack;
`correct` is its correctness function) and keep a completion only if it passes, in this order
(the first failing check is its one drop reason, so the counts add up):

  empty          nothing but whitespace (the SFT schema would reject it)
  truncated      no EOS / stop sequence before max_new_tokens
  unjudged       the correctness reward returned None (cannot be judged)
  incorrect      judged, but not correct
  mixed_language share of target-language words in the reasoning below `min_language_share`
  long_paragraph a paragraph (blank-line separated) over `max_paragraph_chars` / `_words`
  repetition     a repeated word n-gram fraction above `max_repeated_ngram_frac`, or one line
                 (of >= `min_line_chars` characters) occurring more than `max_line_repeats` times
  code_block     a ``` fence inside the reasoning (R1 filtered CoTs with code blocks)
  duplicate      same normalised text as an earlier survivor of the same prompt
  over_quota     the prompt already has `max_per_prompt` completions

A threshold of 0 (or False) turns its filter off. R1 [V2 B.3.3] keeps the correct samples and
filters CoTs with mixed languages, long paragraphs and code blocks; repetition is the cold-start
filter [V2 B.3.2]. Output: `rejection.jsonl` in the "sft" schema (prompt, completion, id, and the
source example's fields; `sft.load_examples` reads it as `jsonl:PATH`), `rejection.stats.json`
(sampled, kept, dropped per reason) and, with `save_dropped`, `rejection.dropped.jsonl`. Files
are written to a temporary name and renamed, so a reader never sees half a file. Finished
batches go to `rejection.progress.jsonl` as they complete: a rerun of an interrupted run with the
same config picks up after the last of them (same output as an uninterrupted run); a changed
config is refused, naming the fields.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os

import jax
import numpy as np

from r1jax.text_filters import Filters, is_empty, normalize

log = logging.getLogger(__name__)

REASONS = (
    "empty",
    "truncated",
    "unjudged",
    "incorrect",
    "mixed_language",
    "long_paragraph",
    "repetition",
    "code_block",
    "duplicate",
    "over_quota",
)


class Selector:
    """Applies the checks in order across batches; remembers survivors per prompt text."""

    def __init__(self, filters: Filters, max_per_prompt: int):
        if max_per_prompt < 1:
            raise ValueError(f"max_per_prompt must be >= 1, got {max_per_prompt}")
        self.filters, self.max_per_prompt = filters, max_per_prompt
        self.seen: dict[str, set[str]] = collections.defaultdict(set)
        self.kept: collections.Counter = collections.Counter()
        self.counts = collections.Counter({r: 0 for r in REASONS})

    def early_reason(self, completion: str, truncated: bool) -> str | None:
        """Checks that need no reward: empty, truncated."""
        if is_empty(completion):
            return "empty"
        if truncated and self.filters.drop_truncated:
            return "truncated"
        return None

    def reason(self, prompt: str, completion: str, early: str | None, correct: float) -> str | None:
        """Drop reason of one completion (None: keep). `correct`: 1 / 0, NaN when unjudged.

        Updates the per-prompt state and the counts; call in sampling order.
        """
        why = early
        if why is None and np.isnan(correct):
            why = "unjudged"
        elif why is None and not correct:
            why = "incorrect"
        why = why or self.filters.text_reason(prompt, completion)
        if why is None:
            key = normalize(completion)
            if key in self.seen[prompt]:
                why = "duplicate"
            else:
                self.seen[prompt].add(key)
                why = "over_quota" if self.kept[prompt] >= self.max_per_prompt else None
        if why is None:
            self.kept[prompt] += 1
        else:
            self.counts[why] += 1
        return why

    def replay(self, kept_rows: list[dict], over_quota: list[list[str]], counts: dict) -> None:
        """Restores the state that one journaled batch left (see rejection_sample)."""
        for r in kept_rows:
            self.seen[r["prompt"]].add(normalize(r["completion"]))
            self.kept[r["prompt"]] += 1
        for prompt, key in over_quota:
            self.seen[prompt].add(key)
        self.counts.update(counts)


# ----------------------------------------------------------------------------------- I/O


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, tuple, set)):
        return list(x.tolist() if isinstance(x, np.ndarray) else x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def write_jsonl_atomic(path: str, rows) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
    os.replace(tmp, path)


def write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=_jsonable)
    os.replace(tmp, path)


def output_paths(config, workdir: str) -> dict[str, str]:
    out = config.get("output") or os.path.join(workdir, "rejection.jsonl")
    stem = out[: -len(".jsonl")] if out.endswith(".jsonl") else out
    return {
        "data": out,
        "stats": stem + ".stats.json",
        "dropped": stem + ".dropped.jsonl",
        "journal": stem + ".progress.jsonl",
    }


def read_journal(path: str, config_json: dict) -> list[dict]:
    """The batches an interrupted run finished, after its config (line 1) is checked against
    this one's. A torn last line is dropped: that batch is redone."""
    from r1jax.config_checks import check_resume

    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    if not records:
        return []
    check_resume(records[0]["config"], config_json)
    return records[1:]


def make_row(example: dict, prompt: str, completion: str, sample: int, reward: float) -> dict:
    """One sft-schema row; example fields named prompt/completion/id become source_<name>."""
    ex_id = str(example.get("id", ""))
    row = {
        ("source_" + k if k in ("prompt", "completion", "id") else k): v for k, v in example.items()
    }
    reward = reward if np.isfinite(reward) else None  # NaN is not JSON
    row.update(
        prompt=prompt, completion=completion, id=f"{ex_id}/{sample}", sample=sample, reward=reward
    )
    return row


# ----------------------------------------------------------------------------------- the run


def filters_from(fc) -> Filters:
    fields = {f.name for f in dataclasses.fields(Filters)}
    unknown = sorted(set(fc) - fields)
    if unknown:
        raise ValueError(f"config.filters: unknown fields {unknown}; known: {sorted(fields)}")
    return Filters(**dict(fc))


def sample_batches(
    params, cfg, tok, examples, template, s, *, k, prompts_per_batch, max_len, key, first=0
):
    """Yields (examples, prompt texts, generate output as NumPy, completion texts) per batch of
    prompts, from batch `first` on (batch b always samples with key fold_in(key, b)). The last
    batch is padded with copies of its last example (one compilation); the copies are dropped
    from what is yielded."""
    from r1jax import sampling
    from r1jax.rl import experience

    starts = range(first * prompts_per_batch, len(examples), prompts_per_batch)
    for b, start in enumerate(starts, start=first):
        chunk = list(examples[start : start + prompts_per_batch])
        real = len(chunk)
        chunk += [chunk[-1]] * (prompts_per_batch - real)
        texts, tokens, mask = experience.encode_prompts(chunk, template, tok, max_len)
        out = sampling.generate(
            params, tokens, mask, jax.random.fold_in(key, b), cfg=cfg, s=s, group_size=k
        )
        out = {name: np.asarray(v)[: real * k] for name, v in jax.device_get(out).items()}
        yield chunk[:real], texts[:real], out, experience.decode_completions(out, tok)


def rejection_sample(config, workdir: str) -> dict:
    """Samples, scores, filters and writes the SFT dataset; returns the statistics."""
    from r1jax import runtime
    from r1jax.data import load_dataset, templates
    from r1jax.metrics import progress
    from r1jax.rl import experience
    from r1jax.train import reward_stack, sampling_config

    os.makedirs(workdir, exist_ok=True)
    paths = output_paths(config, workdir)
    config_json = json.loads(config.to_json_best_effort())
    done = read_journal(paths["journal"], config_json)
    filters = filters_from(config.filters)
    selector = Selector(filters, config.max_per_prompt)
    save_dropped = bool(config.get("save_dropped", False))
    stack = reward_stack(config)
    if stack.correctness is None:
        stack.pool.close()
        raise ValueError(
            "config.correctness: rejection sampling keeps correct completions, but no "
            f"correctness reward is configured (rewards: {list(config.rewards)})"
        )
    mesh = runtime.make_mesh(config)
    cfg, params, tok_dir = runtime.load_or_init_model(config.model, mesh, seed=config.seed)
    tok = runtime.load_tok(config.tokenizer.get("path") or tok_dir)
    d, sc, k = config.data, config.sampling, config.sampling.num_samples
    data = load_dataset(d.name, d.split, seed=config.seed, **dict(d.get("kwargs", {}) or {}))
    n = min(d.num_prompts, len(data)) if d.num_prompts else len(data)
    batches = sample_batches(
        params,
        cfg,
        tok,
        [data[i] for i in range(n)],
        templates.get_template(d.template, **dict(d.get("template_kwargs", {}) or {})),
        sampling_config(sc, tok),
        k=k,
        prompts_per_batch=sc.prompts_per_batch,
        max_len=sc.max_prompt_len,
        key=jax.random.key(config.seed),
        first=len(done),
    )
    records = list(done)  # one per finished batch; the outputs are their concatenation
    for rec in done:
        selector.replay(rec["kept"], rec["over_quota"], rec["counts"])
    write_jsonl_atomic(paths["journal"], [{"config": config_json}, *done])  # drops a torn line
    journal = open(paths["journal"], "a", encoding="utf-8")  # noqa: SIM115 (closed in finally)
    bar = progress(-(-n // sc.prompts_per_batch), len(done), "rejection")
    try:
        for exs, texts, out, comps in batches:
            rec = {"kept": [], "dropped": [], "over_quota": [], "sampled": len(comps), "correct": 0}
            counts_before = collections.Counter(selector.counts)
            prompts = [t for t in texts for _ in range(k)]
            early = [selector.early_reason(c, bool(t)) for c, t in zip(comps, out["truncated"])]
            todo = [i for i, e in enumerate(early) if e is None]
            correct = np.full(len(comps), np.nan)
            total = np.full(len(comps), np.nan, np.float32)
            if todo:  # rewards only for what the cheap checks let through
                fields = experience.reward_fields(exs, k, out)
                res = stack(
                    [prompts[i] for i in todo],
                    [comps[i] for i in todo],
                    {f: [v[i] for i in todo] for f, v in fields.items()},
                )
                judged = np.isfinite(res.per_fn[stack.correctness])
                correct[todo] = np.where(judged, res.correct, np.nan)
                total[todo] = res.total
                rec["correct"] = int(res.correct.sum())
            for i, comp in enumerate(comps):
                why = selector.reason(prompts[i], comp, early[i], correct[i])
                row = make_row(exs[i // k], prompts[i], comp, i % k, float(total[i]))
                if why is None:
                    rec["kept"].append(row)
                elif save_dropped:
                    rec["dropped"].append({**row, "reason": why})
                if why == "over_quota":
                    rec["over_quota"].append([prompts[i], normalize(comp)])
            rec["counts"] = dict(selector.counts - counts_before)
            journal.write(json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n")
            journal.flush()
            records.append(rec)
            bar.update(1)
    finally:
        journal.close()
        bar.close()
        stack.pool.close()
    kept_rows = [r for rec in records for r in rec["kept"]]
    dropped_rows = [r for rec in records for r in rec["dropped"]]
    sampled = sum(rec["sampled"] for rec in records)
    stats = {
        "sampled": sampled,
        "kept": len(kept_rows),
        "dropped": dict(selector.counts),
        "correct": sum(rec["correct"] for rec in records),
        "prompts": n,
        "prompts_with_kept": len(selector.kept),
        "samples_per_prompt": k,
        "max_per_prompt": config.max_per_prompt,
        "filters": dataclasses.asdict(filters),
        "output": paths["data"],
    }
    assert stats["kept"] + sum(stats["dropped"].values()) == sampled  # each sample counted once
    write_jsonl_atomic(paths["data"], kept_rows)
    if save_dropped:
        write_jsonl_atomic(paths["dropped"], dropped_rows)
    write_json_atomic(paths["stats"], stats)
    os.remove(paths["journal"])
    log.warning("rejection sampling: kept %d of %d -> %s", len(kept_rows), sampled, paths["data"])
    return stats
