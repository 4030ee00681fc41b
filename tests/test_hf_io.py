"""Hugging Face import/export, r1jax checkpoints, and the sample and convert CLIs."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from hf_utils import edit_json, left_padded_batch, make_hf_model, torch_logits

from r1jax import checkpoint
from r1jax import sharding as shd
from r1jax.models import UnsupportedConfigError, logits
from r1jax.models import hf as hf_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("qwen3"))
    make_hf_model(path, "qwen3", init_std=0.2)
    return path


def _params_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_then_transformers_gives_same_logits(qwen3_dir, tmp_path):
    import transformers

    cfg, params = hf_io.load_hf(qwen3_dir)
    params = jax.tree.map(lambda x: x * 1.01, params)  # not just a copy of the input files
    out_dir = str(tmp_path / "exported")
    hf_io.save_hf(params, cfg, out_dir, max_shard_bytes=20_000)  # forces several shards
    assert os.path.exists(os.path.join(out_dir, "model.safetensors.index.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(out_dir)
    tokens, mask = left_padded_batch(np.random.default_rng(0), cfg.vocab_size, [6, 11], 11)
    ours = np.asarray(logits(params, tokens, mask, cfg))
    np.testing.assert_allclose(
        ours[mask > 0], torch_logits(model, tokens, mask)[mask > 0], atol=1e-4
    )


def test_import_export_import_is_bit_identical(qwen3_dir, tmp_path):
    cfg, params = hf_io.load_hf(qwen3_dir)
    hf_io.save_hf(params, cfg, str(tmp_path / "a"), dtype="bfloat16")
    cfg_a, params_a = hf_io.load_hf(str(tmp_path / "a"))
    hf_io.save_hf(params_a, cfg_a, str(tmp_path / "b"), dtype="bfloat16")
    cfg_b, params_b = hf_io.load_hf(str(tmp_path / "b"))
    assert cfg_a == cfg_b
    _params_equal(params_a, params_b)
    with open(tmp_path / "a" / "model.safetensors", "rb") as fa:
        with open(tmp_path / "b" / "model.safetensors", "rb") as fb:
            assert fa.read() == fb.read()


def test_load_into_8_device_mesh_matches_single_device(qwen3_dir):
    mesh = shd.make_mesh((("fsdp", 2), ("tensor", 2), ("data", 2)))
    cfg, p1 = hf_io.load_hf(qwen3_dir)
    _, p8 = hf_io.load_hf(qwen3_dir, mesh)
    assert len(p8["layers"]["w_gate"].sharding.device_set) == 8
    _params_equal(p1, p8)


def test_r1jax_checkpoint_roundtrip_and_convert_cli(qwen3_dir, tmp_path):
    dst, back = str(tmp_path / "ours"), str(tmp_path / "back")
    run = [sys.executable, os.path.join(ROOT, "launch", "convert.py")]
    subprocess.run(run + [f"--src={qwen3_dir}", f"--dst={dst}"], check=True)
    subprocess.run(run + [f"--src={dst}", f"--dst={back}", "--to=hf"], check=True)
    _, p0 = hf_io.load_hf(qwen3_dir)
    cfg1, p1 = checkpoint.load_model(dst)
    _params_equal(p0, p1)
    _params_equal(p0, hf_io.load_hf(back)[1])
    assert cfg1 == checkpoint.load_model(back)[0]


def _broken_copy(src, dst, mutate):
    shutil.copytree(src, dst)
    mutate(dst)
    return dst


def _rewrite_tensors(path, fn):
    from safetensors.numpy import load_file, save_file

    file = os.path.join(path, "model.safetensors")
    tensors = fn(load_file(file))
    save_file(tensors, file, metadata={"format": "pt"})


@pytest.mark.parametrize(
    "case, mutate, message",
    [
        (
            "missing",
            lambda d: _rewrite_tensors(
                d,
                lambda t: {k: v for k, v in t.items() if k != "model.layers.1.mlp.up_proj.weight"},
            ),
            "missing tensor 'model.layers.1.mlp.up_proj.weight'",
        ),
        (
            "shape",
            lambda d: _rewrite_tensors(
                d, lambda t: {**t, "model.norm.weight": np.ones(7, np.float32)}
            ),
            "tensor 'model.norm.weight' has shape [7]",
        ),
        (
            "dtype",
            lambda d: _rewrite_tensors(
                d, lambda t: {**t, "model.norm.weight": t["model.norm.weight"].astype(np.int32)}
            ),
            "tensor 'model.norm.weight' has dtype I32",
        ),
        (
            "arch",
            lambda d: edit_json(
                os.path.join(d, "config.json"),
                model_type="mamba",
                architectures=["MambaForCausalLM"],
            ),
            "unknown architecture",
        ),
        (
            "sliding",
            lambda d: edit_json(os.path.join(d, "config.json"), use_sliding_window=True),
            "use_sliding_window",
        ),
        (
            "rope",
            lambda d: edit_json(
                os.path.join(d, "config.json"),
                rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6},
            ),
            "rope scaling type 'yarn'",
        ),
    ],
)
def test_bad_checkpoints_fail_before_allocating(
    qwen3_dir, tmp_path, monkeypatch, case, mutate, message
):
    bad = _broken_copy(qwen3_dir, str(tmp_path / case), mutate)

    def no_alloc(*a, **k):
        raise AssertionError("allocated before validating")

    monkeypatch.setattr(jax, "make_array_from_callback", no_alloc)
    with pytest.raises((hf_io.CheckpointError, UnsupportedConfigError)) as e:
        hf_io.load_hf(bad)
    assert message in str(e.value)


def _word_tokenizer(path, vocab):
    """A word-level tokenizer.json over ids 0..vocab-1 (w0, w1, ...), space-separated."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {f"w{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": f"w{vocab}", "bos_token": None, "pad_token": None}, f)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_sample_cli_greedy_equals_transformers_generate(kind, tmp_path):
    import torch

    path = str(tmp_path / kind)
    model = make_hf_model(path, kind, init_std=0.3, seed=3)
    vocab = model.config.vocab_size
    _word_tokenizer(path, vocab)
    prompts = [[5, 9, 17, 3], [11, 2]]
    out = str(tmp_path / "out.jsonl")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "launch", "sample.py"),
        f"--checkpoint={path}",
        "--max_new_tokens=32",
        "--temperature=0",
        f"--output={out}",
    ]
    for p in prompts:
        cmd.append("--prompt=" + " ".join(f"w{i}" for i in p))
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in open(out)]
    assert [len(r["token_ids"]) for r in rows] == [32, 32]
    assert len({t for r in rows for t in r["token_ids"]}) > 8  # not a degenerate repetition
    for p, row in zip(prompts, rows, strict=True):
        ref = model.generate(
            torch.tensor([p]), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        assert row["token_ids"] == ref[0, len(p) :].tolist()
