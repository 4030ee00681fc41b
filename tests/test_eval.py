"""Evaluation protocol: pass@k and cons@k against closed forms, reproducible and resumable runs of
a tiny checkpoint, greedy decoding, and bad input."""

import itertools
import json
import math
import os
import random
from fractions import Fraction

import pytest
from rl_utils import make_model_dir

from r1jax import configs, continuous, sampling
from r1jax import evaluation as E
from r1jax.configs import eval as eval_configs
from r1jax.data import DataError, templates
from r1jax.errors import ConfigError
from r1jax.models.store import load_model, tokenizer_path
from r1jax.rewards import RewardPool
from r1jax.rewards.math import extract_answer
from r1jax.stages import evaluate as ev
from r1jax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("model")))


def tiny(model_dir, benchmark="sumchain", **changes):
    """3 questions x 2 samples of 8 new tokens; `changes`: {"dotted.key": value} overrides."""
    c = configs.load(f"eval:model={model_dir},benchmark={benchmark}")
    c.mesh = (("fsdp", 1),)
    c.data.num_examples = 3
    c.data.kwargs = dict(test_size=8)
    c.sampling.update(num_samples=2, max_new_tokens=8, chunk=4)
    c.sampling.num_prompts = 2  # batches [0, 1], [2]; a resumed run batches differently
    c.pass_ks = (1, 2)
    return configs.override(c, changes)


# -- metrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,c,k,want",
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 1 - 21 / 252),
        (64, 10, 1, 10 / 64),
        (4, 0, 2, 0.0),
        (4, 3, 2, 1.0),  # fewer than k wrong samples: every k-subset has a correct one
        (1000, 1, 500, 0.5),
    ],
)
def test_pass_at_k_closed_form(n, c, k, want):
    assert E.pass_at_k(n, c, k) == pytest.approx(want, rel=1e-12, abs=1e-15)
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert E.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_k_is_the_mean_over_all_k_subsets():
    correct = [1, 0, 0, 1, 0, 0, 0]
    for k in range(1, 8):
        subsets = list(itertools.combinations(correct, k))
        empirical = sum(any(s) for s in subsets) / len(subsets)
        assert E.pass_at_k(7, 2, k) == pytest.approx(empirical, rel=1e-12)
    # Binomials of n=2000 overflow floats; the product form stays exact.
    exact = 1 - Fraction(math.comb(1997, 1000), math.comb(2000, 1000))
    assert E.pass_at_k(2000, 3, 1000) == pytest.approx(float(exact), rel=1e-12)


def test_pass_at_k_rejects_k_outside_1_to_n():
    with pytest.raises(ValueError, match=r"k=5 must be between 1 and the n=4 samples"):
        E.pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match=r"k=0"):
        E.pass_at_k(4, 1, 0)


def test_majority_vote_buckets_equivalent_answers():
    # 0.5, \frac{1}{2} and \dfrac{1}{2} are one answer with 3 votes; 0.3 has 2.
    assert E.majority_vote(["0.3", "0.5", "0.3", "\\frac{1}{2}", "\\dfrac{1}{2}"]) == (1, 3)
    # Tie 2-2: the bucket whose first answer came first wins.
    assert E.majority_vote(["7", "0.5", "\\frac{1}{2}", "7"]) == (0, 2)
    assert E.majority_vote(["0.5", "7", "7", "\\frac{1}{2}"]) == (0, 2)
    assert E.majority_vote([None, " ", "12", None]) == (2, 1)
    assert E.majority_vote([None, None]) == (None, 0)


def test_vote_in_the_reward_pool_matches_and_times_out():
    lists = [
        ["0.3", "0.5", "0.3", "\\frac{1}{2}", "\\dfrac{1}{2}"],
        ["7", "0.5", "\\frac{1}{2}", "7"],
        [None, None],
    ]
    assert E.vote(lists, RewardPool(workers=0)) == [1, 0, None]
    # sympy would expand the tower for ever; the worker is killed and the pair counts as unequal.
    with RewardPool(workers=1, timeout_s=1.0) as pool:
        assert E.vote([["9^{9^{9^{9}}}", "1", " 1", "2"]], pool) == [1]
        assert pool.counters["timeouts"] == 2  # the tower against "1" and "2" (once per pair)


def _rec(index, sample, correct, answer, length=10, truncated=False):
    return dict(
        index=index,
        sample=sample,
        correct=correct,
        answer=answer,
        length=length,
        truncated=truncated,
    )


def test_summary_by_hand():
    recs = [  # 3 questions, k = 4
        *[_rec(0, j, a == "7", a, 10 * j) for j, a in enumerate(["7", "0.5", "\\frac{1}{2}", "7"])],
        *[_rec(1, j, j in (1, 2), a) for j, a in enumerate(["3", "0.5", "\\frac{1}{2}", None])],
        *[_rec(2, j, False, None, 20, True) for j in range(4)],
    ]
    s = E.summarize(recs, 4, pass_ks=(1, 2, 4))
    assert s["pass@1"] == pytest.approx(4 / 12)
    assert s["pass@2"] == pytest.approx((5 / 6 + 5 / 6 + 0) / 3)  # 1 - C(2,2)/C(4,2) = 5/6
    assert s["pass@4"] == pytest.approx(2 / 3)
    # q0: "7" wins the 2-2 tie (correct); q1: 0.5 ~ 1/2 outvote "3" (correct); q2: no answer.
    assert s["cons@4"] == pytest.approx(2 / 3)
    assert s["completion_len"] == pytest.approx((0 + 10 + 20 + 30 + 40 + 80) / 12)
    assert s["truncated_frac"] == pytest.approx(4 / 12)
    assert s["answered_frac"] == pytest.approx(7 / 12)
    assert s["pass@1_stderr"] == pytest.approx(1 / 6)  # std([.5, .5, 0], ddof=1) / sqrt(3)
    assert (s["num_questions"], s["num_samples"], s["num_correct"]) == (3, 12, 4)
    assert E.summarize(random.Random(0).sample(recs, len(recs)), 4, (1, 2, 4)) == s
    with pytest.raises(ValueError, match=r"question 2: has samples \[0, 1, 2\], expected 0..3"):
        E.summarize(recs[:-1], 4)


# -- runs on a tiny checkpoint --------------------------------------------------------------------


def _read(path):
    with open(path) as f:
        return f.read()


def test_run_is_reproducible_and_resumes_to_the_same_result(model_dir, tmp_path):
    c = tiny(model_dir)
    a = ev.run(c, str(tmp_path / "a"))
    ev.run(c, str(tmp_path / "b"))
    samples = _read(tmp_path / "a" / ev.SAMPLES)
    assert _read(tmp_path / "b" / ev.SAMPLES) == samples
    assert _read(tmp_path / "b" / ev.SUMMARY) == _read(tmp_path / "a" / ev.SUMMARY)
    rows = [json.loads(x) for x in samples.splitlines()]
    assert [(r["index"], r["sample"]) for r in rows] == [(i, j) for i in range(3) for j in range(2)]
    assert [r["id"] for r in rows[::2]] == [f"sumchain/s0/test/{i}" for i in range(3)]
    assert len({r["completion"] for r in rows}) == 6  # per-question keys: all samples differ
    for r in rows:
        assert r["answer"] == extract_answer(r["completion"], fallback="none")
        assert r["truncated"] == (r["length"] == 8)
    assert a["pass@1"] == sum(r["correct"] for r in rows) / 6
    assert a["completion_len"] == pytest.approx(sum(r["length"] for r in rows) / 6)
    assert (a["num_questions"], a["num_samples"], a["complete"]) == (3, 6, True)

    # Interrupted by the hook after the first batch (2 questions), then resumed.
    part = ev.run(c, str(tmp_path / "c"), stop_after=1)
    assert (part["num_questions"], part["complete"]) == (2, False)
    assert _read(tmp_path / "c" / ev.SAMPLES) == "".join(samples.splitlines(True)[:4])
    assert ev.run(c, str(tmp_path / "c")) == a
    assert _read(tmp_path / "c" / ev.SAMPLES) == samples

    # Killed mid-write: question 0 whole, question 1 cut short, a half line. The resumed run
    # redoes questions 1 and 2 in one batch [1, 2] and gets the same samples.
    # Or killed while writing question 2's first line: questions 0 and 1 whole, a half line;
    # the half line must go before the resumed run appends question 2.
    lines = samples.splitlines(True)
    for name, kept, half in (("d", 3, lines[3][:20]), ("e", 4, lines[4][:20])):
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / ev.SAMPLES, "w") as f:
            f.write("".join(lines[:kept]) + half)
        with open(tmp_path / name / ev.META, "w") as f:
            f.write(_read(tmp_path / "a" / ev.META))
        assert ev.run(c, str(tmp_path / name)) == a
        assert _read(tmp_path / name / ev.SAMPLES) == samples


def test_greedy_equals_argmax_sampling(model_dir, tmp_path):
    c = tiny(
        model_dir,
        **{
            "sampling.greedy": True,
            "sampling.num_samples": 1,
            "pass_ks": (1,),
            "data.num_examples": 2,
        },
    )
    s = ev.run(c, str(tmp_path))
    assert s["config"]["sampling"]["greedy"] and s["k"] == 1
    rows = [json.loads(x) for x in _read(tmp_path / ev.SAMPLES).splitlines()]
    cfg, params = load_model(model_dir)
    tok = load_tokenizer(tokenizer_path(model_dir))
    questions = ev.load_questions(c)
    prompts = [templates.r1zero(q["question"]) for q in questions]
    greedy = sampling.SamplingConfig(
        max_new_tokens=8, temperature=0.0, chunk=4, eos_ids=tuple(tok.eos_ids), pad_id=tok.pad_id
    )
    ref = sampling.sample_texts(params, cfg, tok, prompts, greedy)
    assert [r["completion"] for r in rows] == [r["completion"] for r in ref]


def test_continuous_decoder_gives_the_static_samples(model_dir, tmp_path, monkeypatch):
    """sampling.decoder="continuous" runs continuous.generate over each batch (3 slots for its
    2 questions x 2 samples) and gives the same samples and summary as the per-question static
    decoder: each question keeps its own key, fold_in(key(seed), question index)."""
    calls = []
    orig = continuous.generate
    monkeypatch.setattr(continuous, "generate", lambda *a, **k: calls.append(1) or orig(*a, **k))
    c = tiny(model_dir)  # T = 0.6, top-p 0.95
    static = ev.run(c, str(tmp_path / "s"))
    assert not calls
    cont = ev.run(configs.override(c, {"sampling.decoder": "continuous", "sampling.slots": 3}),
                  str(tmp_path / "c"))  # fmt: skip
    assert calls
    assert _read(tmp_path / "c" / ev.SAMPLES) == _read(tmp_path / "s" / ev.SAMPLES)
    assert {k: v for k, v in cont.items() if k != "config"} == {
        k: v for k, v in static.items() if k != "config"
    }


# -- bad input ------------------------------------------------------------------------------------


def test_resume_with_another_config_is_refused(model_dir, tmp_path):
    c = tiny(model_dir)
    ev.check_meta(str(tmp_path), ev.run_meta(c, model_dir))
    with pytest.raises(ConfigError, match=r"seed: 0 -> 1.*another --workdir"):
        ev.run(tiny(model_dir, seed=1), str(tmp_path))
    with pytest.raises(ConfigError, match=r"sampling: \{.*'num_samples': 2.*\} -> \{.*'num_sa"):
        ev.run(tiny(model_dir, **{"sampling.num_samples": 4}), str(tmp_path))
    other = tmp_path / "train_run"
    os.makedirs(other)
    (other / ev.SAMPLES).write_text('{"step": 0}\n')
    with pytest.raises(ConfigError, match=r"no eval_meta.json.*training run"):
        ev.run(c, str(other))
    bad = tmp_path / ev.SAMPLES
    bad.write_text('{"index": 0, "sample": 0, "id": "x"}\nnot json\n{}\n')
    with pytest.raises(ValueError, match=r"eval_samples.jsonl, line 2: not valid JSON"):
        ev.load_samples(str(bad), [{"id": "x"}], 2)
    bad.write_text('{"index": 0, "sample": 0, "id": "gsm8k/test/0"}\n')
    with pytest.raises(ConfigError, match=r"line 1: question 0 has id 'gsm8k/test/0'.*changed"):
        ev.load_samples(str(bad), [{"id": "gsm8k/test/7"}], 2)


def test_bad_config_and_data_are_named(model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"benchmark='mmlu' is unknown"):
        eval_configs.get_config("benchmark=mmlu")
    for change, error, msg in [
        ({"data.name": "mmlu"}, ValueError, r"unknown dataset 'mmlu'"),
        ({"sampling.num_samples": 0}, ConfigError, r"config.sampling.num_samples: must be >= 1"),
        ({"sampling.greedy": True}, ConfigError, r"config.sampling.num_samples: greedy decod"),
        ({"pass_ks": (1, 4)}, ConfigError, r"config.pass_ks: pass@4 needs at least 4.*samples=2"),
    ]:
        with pytest.raises(error, match=msg):
            ev.run(tiny(model_dir, **change), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # refused before anything is written
    math500 = tmp_path / "math500.jsonl"
    rows = [dict(problem="1+1?", answer="2"), dict(problem="2+2?", answer=" ", unique_id="q/2")]
    math500.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = tiny(model_dir, benchmark="math500", **{"data.path": str(math500)})
    with pytest.raises(ValueError, match=r"'math500' \(test split\), question 1 \(id 'q/2'\): no"):
        ev.run(c, str(tmp_path / "w"))
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text('{"question": "1+1?", "answer": "so #### 2"}\n{"question": "2+2?"}\n')
    c = tiny(model_dir, benchmark="gsm8k", **{"data.path": str(gsm8k)})
    with pytest.raises(DataError, match=r"gsm8k.jsonl, line 2: field 'answer': missing"):
        ev.run(c, str(tmp_path / "w"))


@pytest.mark.parametrize("boxes", ["final", "all_equal"])
@pytest.mark.parametrize("fallback", [False, True])
def test_cons_at_k_reads_answers_as_the_accuracy_reward_does(model_dir, boxes, fallback):
    """The voted answers follow the configured accuracy reward's `boxes` and
    `last_number_fallback`: an answer is extracted exactly when the reward can score it."""
    from r1jax.rewards.math import math_accuracy

    kw = {"boxes": boxes, "last_number_fallback": fallback}
    c = tiny(model_dir, **{"rewards.accuracy.kwargs": kw})
    rule = E.answer_rule(c.rewards)
    assert rule == {"boxes": boxes, "fallback": "last_number" if fallback else "none"}
    comps = [r"\boxed{4} then \boxed{5}", r"\boxed{5} and \boxed{5}", "so it is 5", "none"]
    scored = math_accuracy([""] * 4, comps, answer=["5"] * 4, **kw)
    assert [extract_answer(x, **rule) == "5" for x in comps] == [v == 1.0 for v in scored]
    assert E.answer_rule(tiny(model_dir, benchmark="countdown").rewards)["fallback"] == "none"
