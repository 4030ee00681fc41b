"""What a run leaves behind: TensorBoard tags equal to the metric keys, no empty workdir after a
run that failed at set-up, and a bf16 model config that runs on a CPU-only machine (in fp32 by
default, in bf16 with model.cpu_fp32=False)."""

import logging

import jax.numpy as jnp
import pytest
from tensorboardX.proto import event_pb2

from r1jax import cli, configs
from r1jax.data import DataError
from r1jax.data.tfds_io import _tfrecords
from r1jax.metrics import MetricsWriter, read_metrics
from r1jax.models import logits, store


def test_tensorboard_tags_are_the_metric_keys(tmp_path):
    w = MetricsWriter(tmp_path)
    w.write(0, {"eval/pass@1": 0.25, "train/reward": 1.5, "train/kl": float("nan")})
    w.write(1, {"eval/pass@1": 0.5, "train/reward": 2.0})
    w.close()
    (events,) = (tmp_path / "tensorboard").iterdir()
    got = []
    for record in _tfrecords(events):
        e = event_pb2.Event.FromString(record)
        got += [(e.step, v.tag, round(v.simple_value, 6)) for v in e.summary.value]
    assert sorted(got) == [
        (0, "eval/pass@1", 0.25),
        (0, "train/reward", 1.5),
        (1, "eval/pass@1", 0.5),
        (1, "train/reward", 2.0),
    ]  # NaN is not written (metrics.jsonl has it as null)
    assert read_metrics(tmp_path)[0]["train/kl"] is None


def test_a_run_that_fails_at_set_up_leaves_no_workdir(tmp_path):
    c = configs.override(configs.load("r1zero"), {"data.name": "no_such_dataset"})
    wd = tmp_path / "run"
    with pytest.raises(DataError, match="unknown dataset 'no_such_dataset'"):
        cli.run("train", c, str(wd))
    assert not wd.exists()
    wd.mkdir()  # an existing directory is the user's: it is never removed
    with pytest.raises(DataError):
        cli.run("train", c, str(wd))
    assert wd.is_dir()


def test_a_bf16_model_config_computes_in_fp32_on_cpu(caplog):
    section = configs.load("r1zero:model=embedded").model
    section.overrides.update(dtype="bfloat16", param_dtype="bfloat16")
    with caplog.at_level(logging.WARNING):
        cfg, params, _ = store.load_or_init(section, None)
    assert cfg.dtype == "float32" and cfg.param_dtype == "bfloat16"  # storage stays bf16
    assert params["embed"].dtype == jnp.bfloat16
    assert "compute dtype bfloat16 -> float32 on CPU" in caplog.text
    tokens = jnp.asarray([[1, 5, 9, 4]], jnp.int32)
    z = logits(params, tokens, jnp.ones_like(tokens), cfg)
    assert z.dtype == jnp.float32 and bool(jnp.isfinite(z).all())


def test_cpu_fp32_false_computes_in_bf16_on_cpu(caplog):
    """The opt-out keeps the bf16 compute dtype: logits differ from the fp32 model's by bf16
    rounding (~1e-2 of their scale), far above fp32's (~1e-6), and stay close to them."""
    section = configs.load("r1zero:model=embedded").model
    section.overrides.update(dtype="bfloat16")
    section.cpu_fp32 = False
    with caplog.at_level(logging.WARNING):
        cfg, params, _ = store.load_or_init(section, None)
    assert cfg.dtype == "bfloat16" and cfg.param_dtype == "float32"
    assert "-> float32" not in caplog.text
    assert store.config_of(section).dtype == "bfloat16"  # the one decision, both readers
    tokens = jnp.asarray([[1, 5, 9, 4, 7, 2, 8, 3]], jnp.int32)
    z16 = logits(params, tokens, jnp.ones_like(tokens), cfg)
    z32 = logits(params, tokens, jnp.ones_like(tokens), cfg.replace(dtype="float32"))
    err, scale = float(jnp.abs(z16 - z32).max()), float(jnp.abs(z32).max())
    assert 1e-3 * scale < err < 5e-2 * scale, (err, scale)
