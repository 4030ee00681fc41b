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
config is refused, naming the fields. The filters and reasons live in r1jax/text_filters.py.

Multi-host: each process samples and scores its own prompts of every batch; the batch's results
are gathered, so every process applies the checks in the same order (the output does not depend
on the process count) and process 0 writes the files.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging

import jax
import numpy as np

from r1jax import distributed, files, loop, rollout
from r1jax import sharding as shd
from r1jax.checkpoint import check_resume
from r1jax.data import load_dataset, templates
from r1jax.errors import ConfigError
from r1jax.metrics import progress
from r1jax.models import store
from r1jax.text_filters import Filters, is_empty, normalize
from r1jax.tokenizer import load_tokenizer

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


def output_paths(config, workdir) -> dict[str, str]:
    out = config.get("output") or str(files.path(workdir) / "rejection.jsonl")
    stem = out[: -len(".jsonl")] if out.endswith(".jsonl") else out
    return {
        "data": out,
        "stats": stem + ".stats.json",
        "dropped": stem + ".dropped.jsonl",
        "journal": stem + ".progress.jsonl",
    }


def read_journal(path, config_json: dict) -> list[dict]:
    """The batches an interrupted run finished (process 0's journal, shared with every process),
    after its config (line 1) is checked against this one's. A torn last line is dropped: that
    batch is redone."""
    records = files.read_jsonl(path) if distributed.is_main() else []
    records = distributed.gather_objects(records)[0]
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


def score(stack, early_reason, exs, texts, out, comps, k):
    """(correct [n] with NaN where unjudged, total reward [n]) of one process's rows; rewards
    only for what the cheap checks (empty, truncated) let through."""
    prompts = [t for t in texts for _ in range(k)]
    todo = [i for i, (c, t) in enumerate(zip(comps, out["truncated"])) if not early_reason(c, t)]
    correct = np.full(len(comps), np.nan)
    total = np.full(len(comps), np.nan, np.float32)
    if todo:
        fields = rollout.reward_fields(exs, k, out)
        res = stack(
            [prompts[i] for i in todo],
            [comps[i] for i in todo],
            {f: [v[i] for i in todo] for f, v in fields.items()},
        )
        judged = np.isfinite(res.per_fn[stack.correctness])
        correct[todo] = np.where(judged, res.correct, np.nan)
        total[todo] = res.total
    return correct, total


def sample_batches(
    params,
    cfg,
    tok,
    examples,
    template,
    s,
    *,
    k,
    prompts_per_batch,
    max_len,
    key,
    mesh,
    scorer,
    first=0,
):
    """Yields (examples, prompt texts, generate output, completions, correct, total) per batch of
    prompts, from batch `first` on (batch b always samples with key fold_in(key, b)). Each
    process samples and scores (`scorer`) its own prompts; the batch is gathered from every
    process. The last batch is padded with copies of its last example (one compilation); the
    copies are dropped from what is yielded."""
    mine = rollout.my_prompts(mesh, prompts_per_batch, "config.sampling.num_prompts")
    starts = range(first * prompts_per_batch, len(examples), prompts_per_batch)
    for b, start in enumerate(starts, start=first):
        chunk = list(examples[start : start + prompts_per_batch])
        real = len(chunk)
        chunk += [chunk[-1]] * (prompts_per_batch - real)
        texts, tokens, mask = rollout.encode_prompts(chunk[mine], template, tok, max_len)
        out = rollout.generate(
            params,
            cfg,
            s,
            tokens,
            mask,
            jax.random.fold_in(key, b),
            mesh=mesh,
            num_prompts=prompts_per_batch,
            group_size=k,
        )
        comps = rollout.decode_completions(out, tok)
        correct, total = scorer(chunk[mine], texts, out, comps, k)
        local = {"texts": texts, "comps": comps, "correct": correct.tolist()}
        local.update(total=total.tolist(), **{n: np.asarray(v).tolist() for n, v in out.items()})
        parts = distributed.gather_objects(local)
        cat = {n: [x for p in parts for x in p[n]] for n in local}
        out = {n: np.asarray(cat[n])[: real * k] for n in out}
        yield (
            chunk[:real],
            cat["texts"][:real],
            out,
            cat["comps"][: real * k],
            np.asarray(cat["correct"], float)[: real * k],
            np.asarray(cat["total"], np.float32)[: real * k],
        )


def run(config, workdir) -> dict:
    """Samples, scores, filters and writes the SFT dataset; returns the statistics."""
    c = config
    paths = output_paths(c, workdir)
    config_json = json.loads(c.to_json_best_effort())
    done = read_journal(paths["journal"], config_json)
    filters = filters_from(c.filters)
    selector = Selector(filters, c.max_per_prompt)
    save_dropped = bool(c.get("save_dropped", False))
    stack = rollout.reward_stack(c)
    if stack.correctness is None:
        stack.pool.close()
        raise ConfigError(
            "config.correctness: rejection sampling keeps correct completions, but no "
            f"correctness reward is configured (rewards: {list(c.rewards)})"
        )
    mesh = shd.make_mesh(c.mesh)
    cfg, params, tok_dir = store.load_or_init(c.model, mesh, seed=c.seed)
    tok = load_tokenizer(c.tokenizer.get("path") or tok_dir)
    d, sc, k = c.data, c.sampling, c.sampling.num_samples
    data = load_dataset(d.name, d.split, seed=c.seed, **dict(d.get("kwargs", {}) or {}))
    n = min(d.num_examples, len(data)) if d.num_examples else len(data)
    batches = sample_batches(
        params,
        cfg,
        tok,
        [data[i] for i in range(n)],
        templates.get_template(d.template, **dict(d.get("template_kwargs", {}) or {})),
        rollout.sampling_config(sc, tok),
        k=k,
        prompts_per_batch=sc.num_prompts,
        max_len=sc.max_prompt_len,
        key=jax.random.key(c.seed),
        mesh=mesh,
        scorer=lambda *a: score(stack, selector.early_reason, *a),
        first=len(done),
    )
    records = list(done)  # one per finished batch; the outputs are their concatenation
    for rec in done:
        selector.replay(rec["kept"], rec["over_quota"], rec["counts"])
    main = distributed.is_main()
    if main:  # rewritten: drops a torn last line
        files.write_jsonl(paths["journal"], [{"config": config_json}, *done])
    bar = progress(-(-n // sc.num_prompts), len(done), "rejection")
    stopped = False
    with loop.StopSignal() as stop:
        try:
            for exs, texts, out, comps, correct, total in batches:
                rec = _select(selector, exs, texts, out, comps, correct, total, k, save_dropped)
                if main:
                    files.append_jsonl(paths["journal"], [rec])
                records.append(rec)
                bar.update(1)
                if distributed.any_true(stop.requested):  # a preemption on any host: resumable
                    stopped = True
                    break
        finally:
            bar.close()
            stack.pool.close()
    if stopped:
        log.warning("rejection sampling stopped after %d batches; rerun to resume", len(records))
        return {"stopped": True, "batches": len(records)}
    kept_rows = [r for rec in records for r in rec["kept"]]
    sampled = sum(rec["sampled"] for rec in records)
    stats = {
        "sampled": sampled,
        "kept": len(kept_rows),
        "dropped": dict(selector.counts),
        "correct": sum(rec["correct"] for rec in records),
        "prompts": n,
        "prompts_with_kept": len(selector.kept),
        "samples_per_prompt": k,
        "max_per_prompt": c.max_per_prompt,
        "filters": dataclasses.asdict(filters),
        "output": paths["data"],
    }
    assert stats["kept"] + sum(stats["dropped"].values()) == sampled  # each sample counted once
    if main:
        files.write_jsonl(paths["data"], kept_rows)
        if save_dropped:
            files.write_jsonl(paths["dropped"], [r for rec in records for r in rec["dropped"]])
        files.write_json(paths["stats"], stats)
        files.path(paths["journal"]).unlink()
    distributed.barrier("rejection_done")
    log.warning("rejection sampling: kept %d of %d -> %s", len(kept_rows), sampled, paths["data"])
    return stats


def _select(selector, exs, texts, out, comps, correct, total, k, save_dropped) -> dict:
    """One batch through the checks, in sampling order: its journal record."""
    rec = {"kept": [], "dropped": [], "over_quota": [], "sampled": len(comps)}
    rec["correct"] = int(np.nansum(correct))
    counts_before = collections.Counter(selector.counts)
    prompts = [t for t in texts for _ in range(k)]
    for i, comp in enumerate(comps):
        early = selector.early_reason(comp, bool(out["truncated"][i]))
        why = selector.reason(prompts[i], comp, early, correct[i])
        row = make_row(exs[i // k], prompts[i], comp, i % k, float(total[i]))
        if why is None:
            rec["kept"].append(row)
        elif save_dropped:
            rec["dropped"].append({**row, "reason": why})
        if why == "over_quota":
            rec["over_quota"].append([prompts[i], normalize(comp)])
    rec["counts"] = dict(selector.counts - counts_before)
    return rec
