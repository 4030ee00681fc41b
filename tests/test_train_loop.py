"""The GRPO loop end to end on a tiny model: it learns, resumes exactly, and refuses bad input."""

import json
import os

import jax
import numpy as np
import pytest
from rl_utils import make_model_dir, tiny_config

from r1jax.errors import ConfigError
from r1jax.metrics import read_metrics
from r1jax.rl import losses
from r1jax.stages import grpo


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("model")))


def _params(trainer):
    return [np.asarray(x) for x in jax.tree.leaves(trainer.state["train"]["params"])]


def test_short_run_raises_reward(model_dir, tmp_path):
    c = tiny_config(
        model_dir,
        steps=25,
        **{"rl.beta": 0.0, "optim.lr": 3e-3, "rl.num_minibatches": 1, "sampling.num_prompts": 8},
    )
    grpo.run(c, str(tmp_path))
    rewards = [r["train/reward"] for r in read_metrics(str(tmp_path))]
    assert len(rewards) == 25
    # A random policy writes '7' in ~0.4% of characters; GRPO makes it ~10x more frequent.
    assert np.mean(rewards[-5:]) > 5 * np.mean(rewards[:5]) and np.mean(rewards[-5:]) > 0.02


def test_resume_equals_uninterrupted(model_dir, tmp_path):
    straight = grpo.GRPO(tiny_config(model_dir), str(tmp_path / "a"))
    straight.run()
    half = grpo.GRPO(tiny_config(model_dir, steps=2), str(tmp_path / "b"))
    half.run()
    resumed = grpo.GRPO(tiny_config(model_dir), str(tmp_path / "b"))
    resumed.run()
    for a, b in zip(_params(straight), _params(resumed), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    # Same data order and samples: the logged metrics of the two runs agree step by step.
    ma, mb = read_metrics(str(tmp_path / "a")), read_metrics(str(tmp_path / "b"))
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [1, 2, 3, 4]
    for ra, rb in zip(ma, mb):
        assert ra["train/reward"] == pytest.approx(rb["train/reward"], abs=1e-6)
    samples = [json.loads(x) for x in open(tmp_path / "a" / "samples.jsonl")]
    assert {s["step"] for s in samples} == {2, 4}


def test_resume_with_changed_config_is_refused(model_dir, tmp_path):
    grpo.GRPO(tiny_config(model_dir, steps=2), str(tmp_path)).run()
    with pytest.raises(ConfigError, match=r"rl.loss_type: 'grpo' -> 'dapo'"):
        grpo.GRPO(tiny_config(model_dir, **{"rl.loss_type": "dapo"}), str(tmp_path)).run()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"rl.num_minibatches": 3}, "config.rl.num_minibatches: 3 does not divide"),
        ({"micro_batch": 3}, "config.micro_batch: 3 does not divide"),
        ({"sampling.num_samples": 1}, "config.sampling.num_samples"),
        ({"rl.loss_type": "ppo"}, "LossConfig.loss_type must be one of"),
        ({"rewards.sevens.name": "nope"}, "config.rewards.sevens: unknown reward 'nope'"),
    ],
)
def test_config_errors_name_the_field_before_compiling(
    model_dir, tmp_path, monkeypatch, change, field
):
    def no_jit(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(jax, "jit", no_jit)
    with pytest.raises(ConfigError) as e:
        grpo.GRPO(tiny_config(model_dir, **change), str(tmp_path))
    assert field in str(e.value)


def test_micro_batch_not_splitting_over_mesh_is_an_error(model_dir, tmp_path):
    c = tiny_config(model_dir, mesh=(("fsdp", 8),), micro_batch=4)
    with pytest.raises(ConfigError, match="config.micro_batch: 4 rows do not split over"):
        grpo.GRPO(c, str(tmp_path))


def test_nonfinite_updates_are_skipped_counted_and_stop_the_run(model_dir, tmp_path, monkeypatch):
    real = losses.policy_loss

    def nan_loss(*args):
        loss, metrics = real(*args)
        return loss * np.nan, metrics

    monkeypatch.setattr(losses, "policy_loss", nan_loss)
    c = tiny_config(model_dir, steps=10, max_nonfinite_in_a_row=3)
    t = grpo.GRPO(c, str(tmp_path))
    before = _params(t)
    with pytest.raises(FloatingPointError, match="3 steps in a row"):
        t.run()
    for a, b in zip(before, _params(t)):
        np.testing.assert_array_equal(a, b)  # no update was applied
    rows = read_metrics(str(tmp_path))
    assert [r["train/skipped_updates"] for r in rows] == [2.0, 2.0, 2.0]  # 2 updates per step
    assert os.path.isdir(tmp_path / "checkpoints" / "3")  # saved before stopping


def test_dynamic_sampling_draws_more_and_drops_zero_variance_groups(model_dir, tmp_path):
    c = tiny_config(
        model_dir,
        steps=3,
        **{
            "rl.dynamic_sampling": True,
            "rl.max_gen_batches": 6,
            "rl.loss_type": "dapo",
            "rl.beta": 0.0,
        },
    )
    c.rewards = {"half": dict(name="tests.rl_utils:reward_half_constant", weight=1.0, kwargs={})}
    t = grpo.GRPO(c, str(tmp_path))
    t.run()
    rows = read_metrics(str(tmp_path))
    draws = [r["train/gen_batches"] for r in rows]
    # About half the questions start with an even number: one draw of 4 never has 4 varied groups
    # here, so every step draws more.
    assert all(d >= 2 for d in draws)
    assert all(r["train/frac_zero_std"] == 0.0 for r in rows)  # only varied groups trained on
    # Every drawn batch is consumed from the data stream, so a resume stays exact.
    assert t.it.get_state()["position"] == 4 * sum(draws)


def test_training_on_8_devices_matches_one_device(model_dir, tmp_path):
    """Sharded rollouts, scoring and updates: the first step sees the same samples and rewards,
    and the parameters after two steps agree. (One minibatch per rollout: with several, each
    mesh shuffles rows within its own device blocks, by design, so minibatches differ.)"""
    one_mb = {"rl.num_minibatches": 1}
    one = grpo.GRPO(tiny_config(model_dir, steps=2, **one_mb), str(tmp_path / "one"))
    one.run()
    eight = grpo.GRPO(
        tiny_config(model_dir, steps=2, mesh=(("fsdp", 4), ("data", 2)), micro_batch=8, **one_mb),
        str(tmp_path / "eight"),
    )
    eight.run()
    assert len(eight.state["train"]["params"]["layers"]["wq"].sharding.device_set) == 8
    m1, m8 = read_metrics(str(tmp_path / "one")), read_metrics(str(tmp_path / "eight"))
    assert m8[0]["train/reward"] == pytest.approx(m1[0]["train/reward"], abs=1e-6)
    for a, b in zip(_params(one), _params(eight)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
