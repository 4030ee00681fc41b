"""The main job's ingredients: the shipped embedded base model and the default config."""

import json

import numpy as np

from r1jax import configs, sampling
from r1jax.data import load_dataset, templates
from r1jax.models import count_params
from r1jax.models.store import EMBEDDED_BASE, load_model, tokenizer_path
from r1jax.stages import grpo
from r1jax.tokenizer import load_tokenizer


def test_shipped_base_model_loads_and_answers_in_the_r1zero_format():
    cfg, params = load_model(EMBEDDED_BASE)
    tok = load_tokenizer(tokenizer_path(EMBEDDED_BASE))
    assert 0.9e6 < count_params(cfg) < 1.2e6 and cfg.vocab_size == tok.vocab_size
    ex = load_dataset("sumchain", "test")[0]
    s = sampling.SamplingConfig(
        max_new_tokens=64, temperature=0.0, eos_ids=tok.eos_ids, pad_id=tok.pad_id
    )
    (row,) = sampling.sample_texts(params, cfg, tok, [templates.r1zero(ex["question"])], s)
    # Greedy decoding of the base model reasons step by step in the template's tags.
    assert row["completion"].startswith(" <think> ") and "</think>" in row["completion"]
    assert not row["truncated"]


def test_default_config_runs_two_steps(tmp_path):
    c = configs.load("r1zero")
    c.steps, c.eval_every, c.samples_every = 2, 2, 1
    c.eval.num_questions, c.eval.sampling.num_prompts = 8, 8
    last = grpo.run(c, str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2]
    # The shipped base model is the one whose curves the README shows: step-0 pass@1 ~0.27 on
    # 128 questions; on these 8 it must be well inside (0, 1).
    assert 0.0 < rows[0]["eval/pass@1"] < 0.8
    assert np.isfinite(last["train/loss"]) and last["train/skipped_updates"] == 0
    assert (tmp_path / "model" / "model_config.json").exists()
