"""Rejection sampling: each filter on hand-made texts, the selector, a run end to end."""

import collections
import json
import os

import ml_collections
import numpy as np
import pytest
from rl_utils import make_model_dir

from r1jax import configs
from r1jax import text_filters as tf
from r1jax.data import load_dataset, packing
from r1jax.stages import rejection as rs


def reward_chars_mod3(prompts, completions, **fields):
    """Deterministic "correctness" from the number of distinct characters n: 1.0 if n % 3 == 1,
    0.0 if n % 3 == 2, None (unjudged) if n % 3 == 0."""
    return [{0: None, 1: 1.0, 2: 0.0}[len(set(c)) % 3] for c in completions]


def test_empty():
    assert tf.is_empty(" \n\t ") and tf.is_empty("")
    assert not tf.is_empty(" a ")


def test_mixed_language():
    # Words: This, is, 一, test -> 3 of 4 English.
    assert tf.mixed_language("This is 一 test", min_share=0.95)
    assert not tf.mixed_language("This is 一 test", min_share=0.75)
    assert tf.mixed_language("全是中文", min_share=0.5)
    assert not tf.mixed_language("17 + 8 = 25. 25 + 25 = 50.", min_share=0.95)  # no words
    assert not tf.mixed_language("全是中文", min_share=0.0)  # disabled
    assert tf.mixed_language("This is 一 test", language="zh", min_share=0.5)  # 1/4 Chinese


def test_long_paragraph():
    text = "ab cd\n\nefg hij klm\n \nx"
    assert tf.longest_paragraph(text) == (11, 3)
    assert tf.long_paragraph(text, max_chars=10)
    assert not tf.long_paragraph(text, max_chars=11)
    assert tf.long_paragraph(text, max_words=2)
    assert not tf.long_paragraph(text, max_words=3)
    assert not tf.long_paragraph(text)  # both thresholds 0: off


def test_repetition():
    assert tf.repeated_ngram_fraction("a b a b a b", 2) == pytest.approx(0.6)  # ab ba AB BA AB
    assert tf.repeated_ngram_fraction("a b a b a b", 3) == pytest.approx(0.5)  # aba bab ABA BAB
    assert tf.repeated_ngram_fraction("a b c", 4) == 0.0
    text = "wait, let me check\nok\nwait, let me check\n  wait, let me check  \nok"
    assert tf.max_line_repeats(text, min_chars=8) == 3
    assert tf.max_line_repeats("ok\nok", min_chars=8) == 0
    assert tf.repetitive(text, max_repeats=2)
    assert not tf.repetitive(text, max_repeats=3)
    assert tf.repetitive("a b a b a b", ngram=2, max_ngram_frac=0.5)
    assert not tf.repetitive("a b a b a b", ngram=2, max_ngram_frac=0.6)


def test_filters_read_the_right_text():
    f = rs.Filters(min_language_share=0.9, max_paragraph_chars=60, drop_code_blocks=True)
    # Language and code blocks are judged on the reasoning only; a Chinese summary is fine.
    assert f.text_reason("Q:", "<think> plain english words </think> 答案是五") is None
    assert f.text_reason("Q:", "<think> 一二三 words </think> ok") == "mixed_language"
    assert f.text_reason("Q: <think>", " 一二三 words </think> ok") == "mixed_language"
    assert f.text_reason("Q:", "<think> ```x``` </think> ok") == "code_block"
    assert f.text_reason("Q:", "<think> hi </think> ```x```") is None
    # Paragraph length is judged on the whole completion.
    assert f.text_reason("Q:", "<think> hi </think> " + "word " * 9) == "long_paragraph"


def test_selector_order_dedupe_and_quota():
    sel = rs.Selector(rs.Filters(max_paragraph_chars=20), max_per_prompt=2)
    items = [  # prompt, completion, truncated, correct
        ("p", "  ", False, 1.0),
        ("p", "cut off", True, 1.0),
        ("p", "a b", False, np.nan),
        ("p", "a b", False, 0.0),
        ("p", "x" * 21, False, 1.0),
        ("p", "a  b", False, 1.0),
        ("p", " a b\n", False, 1.0),  # same normalised text as "a  b"
        ("q", "a b", False, 1.0),  # other prompt: not a duplicate
        ("p", "c d", False, 1.0),
        ("p", "e f", False, 1.0),  # third distinct survivor of p
        ("p", "c d", False, 1.0),  # duplicates are found before the quota
    ]
    got = [sel.reason(p, c, sel.early_reason(c, t), k) for p, c, t, k in items]
    # A selector restored from a journal record of the first 10 items decides the rest alike.
    first = rs.Selector(sel.filters, max_per_prompt=2)
    whys = [first.reason(p, c, first.early_reason(c, t), k) for p, c, t, k in items[:10]]
    kept = [{"prompt": p, "completion": c} for (p, c, _, _), w in zip(items, whys) if w is None]
    over = [[p, rs.normalize(c)] for (p, c, _, _), w in zip(items, whys) if w == "over_quota"]
    restored = rs.Selector(sel.filters, max_per_prompt=2)
    restored.replay(kept, over, dict(first.counts))
    assert over and [restored.reason(p, c, None, k) for p, c, _, k in items[10:]] == got[10:]
    assert restored.counts == sel.counts and restored.kept == sel.kept
    assert got == [
        "empty",
        "truncated",
        "unjudged",
        "incorrect",
        "long_paragraph",
        None,
        "duplicate",
        None,
        None,
        "over_quota",
        "duplicate",
    ]
    assert dict(sel.kept) == {"p": 2, "q": 1}
    assert sum(sel.counts.values()) == 8 and sel.counts["duplicate"] == 2
    assert rs.Selector(rs.Filters(drop_truncated=False), 1).early_reason("x", True) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = make_model_dir(str(tmp_path_factory.mktemp("model")))
    work = str(tmp_path_factory.mktemp("rs"))
    c = configs.load(f"rejection:model={model}")
    c.mesh = (("fsdp", 1),)
    c.data.num_examples = 6
    c.rewards = ml_collections.ConfigDict(
        {"acc": dict(name="tests.test_rejection:reward_chars_mod3", weight=1.0, kwargs={})}
    )
    c.correctness = "acc"
    c.reward_pool.workers = 0
    # top-k 2 over 3 tokens: at most 8 distinct completions, so 8 samples repeat themselves.
    c.sampling.update(num_samples=8, num_prompts=4, max_new_tokens=3, chunk=3)
    c.sampling.update(temperature=1.0, top_k=2, top_p=1.0)
    c.filters.update(drop_truncated=False, max_paragraph_chars=11, max_line_repeats=0)
    c.max_per_prompt = 1
    c.save_dropped = True
    return c, work, rs.run(c, work)


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_run_end_to_end(run):
    c, work, stats = run
    paths = rs.output_paths(c, work)
    kept, dropped = _rows(paths["data"]), _rows(paths["dropped"])
    with open(paths["stats"]) as f:
        assert json.load(f) == stats
    assert stats["sampled"] == 6 * 8 == len(kept) + len(dropped)
    assert stats["kept"] == len(kept)
    assert stats["kept"] + sum(stats["dropped"].values()) == stats["sampled"]
    # Replay the rules independently, in sampling order, from every row written.
    data = load_dataset("sumchain", "train", seed=c.seed)
    order = {data[i]["id"]: i for i in range(6)}
    rows = sorted(kept + dropped, key=lambda r: (order[r["source_id"]], r["sample"]))
    assert [(order[r["source_id"]], r["sample"]) for r in rows] == [
        (i, j) for i in range(6) for j in range(8)
    ]
    seen, n_kept, want = collections.defaultdict(set), collections.Counter(), []
    for r in rows:
        p, comp = r["prompt"], r["completion"]
        acc = reward_chars_mod3([p], [comp])[0]
        assert r["reward"] == acc
        if not comp.strip():
            why = "empty"
        elif acc is None:
            why = "unjudged"
        elif acc == 0.0:
            why = "incorrect"
        elif max(len(x.strip()) for x in comp.split("\n\n")) > 11:
            why = "long_paragraph"
        elif " ".join(comp.split()) in seen[p]:
            why = "duplicate"
        else:
            seen[p].add(" ".join(comp.split()))
            why = "over_quota" if n_kept[p] >= 1 else None
            n_kept[p] += why is None
        want.append(why)
        assert r.get("reason") == why, r
    assert stats["dropped"] == {
        k: sum(w == k for w in want) for k in rs.REASONS
    }  # and every reason of the list is reported, zeros included
    for reason in ("unjudged", "incorrect", "long_paragraph", "duplicate", "over_quota"):
        assert stats["dropped"][reason] > 0, reason  # the run exercises these checks
    assert stats["prompts_with_kept"] == len(n_kept)
    # Kept rows: one per prompt (max_per_prompt=1), each a clean "sft" row.
    assert len({r["prompt"] for r in kept}) == len(kept)
    assert all(r["id"] == f"{r['source_id']}/{r['sample']}" for r in kept)
    assert all(r["question"] == data[order[r["source_id"]]]["question"] for r in kept)


def test_output_is_sft_data(run):
    c, work, _ = run
    path = rs.output_paths(c, work)["data"]
    dcfg = ml_collections.ConfigDict({"name": "jsonl:" + path, "num_examples": 0})
    pairs = packing.load_examples(dcfg)
    assert pairs == [(r["prompt"], r["completion"]) for r in _rows(path)]
    assert not [p for p in os.listdir(work) if p.endswith(".tmp")]


def test_interrupted_run_resumes_to_the_same_output(run, tmp_path, monkeypatch):
    c, work, stats = run
    real = rs.sample_batches

    def two_then_stop(*a, **kw):
        for i, batch in enumerate(real(*a, **kw)):
            if i == 1:
                raise KeyboardInterrupt  # after one finished batch, as a Ctrl-C would
            yield batch

    resumed = str(tmp_path / "rs")
    monkeypatch.setattr(rs, "sample_batches", two_then_stop)
    with pytest.raises(KeyboardInterrupt):
        rs.run(c, resumed)
    paths = rs.output_paths(c, resumed)
    assert not os.path.exists(paths["data"]) and len(_rows(paths["journal"])) == 2  # config, 1
    monkeypatch.setattr(rs, "sample_batches", real)
    changed = c.copy_and_resolve_references()
    changed.max_per_prompt = 2
    with pytest.raises(ValueError, match="max_per_prompt: 1 -> 2"):
        rs.run(changed, resumed)
    firsts = []
    monkeypatch.setattr(
        rs, "sample_batches", lambda *a, **kw: (firsts.append(kw["first"]), real(*a, **kw))[1]
    )
    assert rs.run(c, resumed) == {**stats, "output": paths["data"]}
    assert firsts == [1]  # the finished batch was not sampled again
    for name in ("data", "dropped"):
        assert _rows(paths[name]) == _rows(rs.output_paths(c, work)[name])
    assert not os.path.exists(paths["journal"])
