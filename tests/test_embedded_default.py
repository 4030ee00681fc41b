"""The main job's ingredients: the shipped embedded base model and the default config."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from conftest import NO_LLVM_OPT

from r1jax import sampling
from r1jax.data import load_dataset, templates
from r1jax.models import count_params
from r1jax.models.store import EMBEDDED_BASE, load_model, tokenizer_path
from r1jax.tokenizer import load_tokenizer

REPO = pathlib.Path(__file__).resolve().parent.parent


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


def test_the_main_job_runs_as_the_readme_starts_it(tmp_path):
    """The README's main command, shortened to one step with an evaluation before and after,
    as a user runs it (a subprocess at XLA's default optimisation level: it computes more than
    it compiles)."""
    flags = os.environ.get("XLA_FLAGS", "").replace(NO_LLVM_OPT, "")
    env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "launch/train.py", "--config=configs/r1zero.py",
           f"--workdir={tmp_path}", "--config.steps=1", "--config.eval_every=1",
           "--config.samples_every=1", "--config.eval.num_questions=8",
           "--config.eval.sampling.num_prompts=8"]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1]
    # The shipped base model is the one whose curves the README shows: step-0 pass@1 ~0.27 on
    # 128 questions; on these 8 it must be well inside (0, 1).
    assert 0.0 < rows[0]["eval/pass@1"] < 0.8
    assert np.isfinite(rows[1]["train/loss"]) and rows[1]["train/skipped_updates"] == 0
    assert (tmp_path / "model" / "model_config.json").exists()
    assert (tmp_path / "samples.jsonl").exists()
