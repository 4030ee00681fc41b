"""The four-stage pipeline's mechanics on a tiny model: every stage evaluated, a crash keeps the
earlier stages, and the rerun resumes at the stage that crashed."""

import json
import os

import ml_collections
import pytest
from rl_utils import make_model_dir

from r1jax import configs
from r1jax.stages import pipeline, rejection


def _tiny_pipeline(base):
    c = configs.load("r1")
    c.base = base
    c.cold_start_examples, c.preference_pairs = 16, 16
    # The mechanics of the recipe, on one device (sharded runs are tested stage by stage).
    one = (("fsdp", 1),)
    for stage in (c.cold_start, c.reasoning_rl, c.rejection, c.rejection_sft, c.reward_model):
        stage.mesh = one
    c.all_scenario_rl.mesh = c.eval.mesh = one
    c.cold_start.update(steps=1, batch_size=8, micro_batch=8)
    c.rejection_sft.update(steps=1, batch_size=8, micro_batch=8)
    for rl in (c.reasoning_rl, c.all_scenario_rl):
        rl.update(steps=1, ckpt_every=1, micro_batch=8)
        rl.sampling.update(
            num_prompts=2, num_samples=4, max_new_tokens=8, chunk=4, max_prompt_len=128
        )
    c.rejection.data.num_examples = 4
    c.rejection.rewards = ml_collections.ConfigDict(
        {"accuracy": {"name": "tests.rl_utils:reward_one", "weight": 1.0, "kwargs": {}}}
    )
    c.rejection.correctness = "accuracy"
    c.rejection.filters.update(
        drop_truncated=False,
        min_language_share=0.0,
        max_repeated_ngram_frac=0.0,
        max_line_repeats=0,
    )
    c.rejection.sampling.update(num_samples=2, num_prompts=4, max_new_tokens=8, max_prompt_len=128)
    c.reward_model.update(steps=1, batch_size=8, micro_batch=8)
    c.eval.data.num_examples = 4
    c.eval.sampling.update(num_samples=2, num_prompts=4, max_new_tokens=8, max_prompt_len=128)
    c.eval.pass_ks = (1, 2)
    return c


def test_pipeline_evaluates_every_stage_and_resumes_after_a_crash(tmp_path, monkeypatch):
    base = make_model_dir(str(tmp_path / "base"))
    c = _tiny_pipeline(base)
    work = str(tmp_path / "r1")

    def crash(*a, **k):
        raise RuntimeError("simulated crash in stage 3")

    with monkeypatch.context() as m:
        m.setattr(rejection, "run", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            pipeline.run_pipeline(c, work)
    stage_dirs = sorted(os.listdir(work))
    assert stage_dirs[:2] == ["1_cold_start", "2_reasoning_rl"]
    for d in stage_dirs[:2]:
        assert os.path.exists(os.path.join(work, d, "DONE"))
        assert os.path.exists(os.path.join(work, d, "model", "model_config.json"))
    assert not os.path.exists(os.path.join(work, "3_rejection_sft", "DONE"))
    done_before = os.path.getmtime(os.path.join(work, "2_reasoning_rl", "DONE"))

    results = pipeline.run_pipeline(c, work)  # resumes at stage 3
    assert list(results) == list(pipeline.STAGES)
    assert os.path.getmtime(os.path.join(work, "2_reasoning_rl", "DONE")) == done_before
    for i, stage in enumerate(pipeline.STAGES):
        with open(os.path.join(work, f"{i + 1}_{stage}", "eval.json")) as f:
            summary = json.load(f)
        assert summary["num_questions"] == 4 and summary["k"] == 2
        assert results[stage]["pass@1"] == summary["pass@1"]
    with open(os.path.join(work, "3_rejection_sft", "rejection", "rejection.stats.json")) as f:
        stats = json.load(f)
    assert stats["sampled"] == 8
