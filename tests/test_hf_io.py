"""Hugging Face import/export, r1jax checkpoints, and the sample and convert CLIs."""

import json
import os
import shutil
import subprocess
import sys

import jax
import ml_dtypes
import numpy as np
import pytest
from hf_utils import edit_json, left_padded_batch, make_hf_model, torch_logits

from r1jax import sharding as shd
from r1jax.models import UnsupportedConfigError, load_hf_config, logits, store
from r1jax.models import hf as hf_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Tiny checkpoints written by transformers: qwen3 (untied, q/k norm), qwen2 (tied, bias)."""
    dirs = {}
    for kind in ("qwen3", "qwen2"):
        dirs[kind] = str(tmp_path_factory.mktemp(kind))
        make_hf_model(dirs[kind], kind, init_std=0.2)
    return dirs


@pytest.fixture(scope="module")
def qwen3_dir(hf_dirs):
    return hf_dirs["qwen3"]


def _one_device():
    return shd.make_mesh((("fsdp", 1),), jax.devices()[:1])


def _fsdp4_tensor2():
    return shd.make_mesh((("fsdp", 4), ("tensor", 2)))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _params_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_then_transformers_gives_same_logits(qwen3_dir, tmp_path):
    import transformers
    from safetensors.numpy import load_file

    cfg, params = hf_io.load_hf(qwen3_dir)  # the default mesh: all 8 devices on "fsdp"
    assert len(params["layers"]["w_up"].sharding.device_set) == 8
    params = jax.tree.map(lambda x: x * 1.01, params)  # not just a copy of the input files
    out_dir = tmp_path / "exported"
    hf_io.save_hf(params, cfg, str(out_dir), max_shard_bytes=20_000)  # forces several shards
    index = json.loads((out_dir / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    n = len(files)
    assert n > 3 and files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    shards = [load_file(str(out_dir / f)) for f in files]
    sizes = [sum(a.nbytes for a in s.values()) for s in shards]
    assert all(size <= 20_000 or len(s) == 1 for size, s in zip(sizes, shards))
    assert (
        index["metadata"]["total_size"]
        == sum(sizes)
        == 4 * sum(x.size for x in jax.tree.leaves(params))
    )
    assert index["weight_map"] == {k: f for f, s in zip(files, shards) for k in s}
    # The same values from one device give the same files, byte for byte.
    one = jax.device_put(params, jax.devices()[0])
    hf_io.save_hf(one, cfg, str(tmp_path / "one"), max_shard_bytes=20_000)
    for f in [*files, "model.safetensors.index.json"]:
        assert _read(tmp_path / "one" / f) == _read(out_dir / f)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out_dir))
    tokens, mask = left_padded_batch(np.random.default_rng(0), cfg.vocab_size, [6, 11], 11)
    ours = np.asarray(logits(params, tokens, mask, cfg))
    np.testing.assert_allclose(
        ours[mask > 0], torch_logits(model, tokens, mask)[mask > 0], atol=1e-4
    )


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"])
def test_export_is_transformers_file_byte_for_byte_from_any_mesh(hf_dirs, kind, tmp_path):
    """float32: our file *is* transformers' save_pretrained file; bfloat16: it is
    safetensors' save_file of the cast tensors. Both from 1 device and from fsdp=4 x tensor=2."""
    from safetensors.numpy import load_file, save_file

    src = os.path.join(hf_dirs[kind], "model.safetensors")
    cast = {k: v.astype(ml_dtypes.bfloat16) for k, v in load_file(src).items()}
    save_file(cast, str(tmp_path / "ref_bf16.safetensors"), metadata={"format": "pt"})
    for mesh in (_one_device(), _fsdp4_tensor2()):
        cfg, params = hf_io.load_hf(hf_dirs[kind], mesh)
        hf_io.save_hf(params, cfg, str(tmp_path / "f32"))
        assert _read(tmp_path / "f32" / "model.safetensors") == _read(src)
        hf_io.save_hf(params, cfg, str(tmp_path / "bf16"), dtype="bfloat16")
        ref = _read(tmp_path / "ref_bf16.safetensors")
        assert _read(tmp_path / "bf16" / "model.safetensors") == ref


def test_streaming_writer_equals_safetensors_save_file(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    bf16 = ml_dtypes.bfloat16
    tensors = {
        "layers.10.w": rng.normal(size=(3, 5)).astype(np.float32),
        "layers.2.w": rng.normal(size=(7,)).astype(bf16),
        "b": rng.normal(size=(2, 2, 3)).astype(np.float16),
        "a": rng.normal(size=(1,)).astype(bf16),
        "z": rng.normal(size=(4, 1)).astype(np.float32),
        "\u00fc.scalar": np.array(2.5, np.float32),
    }
    st = {np.dtype(np.float32): "F32", np.dtype(bf16): "BF16", np.dtype(np.float16): "F16"}
    specs = {k: (st[v.dtype], v.shape) for k, v in tensors.items()}
    fetched = []
    fetch = lambda n: fetched.append(n) or tensors[n]  # noqa: E731
    for metadata in (None, {"format": "pt"}):
        fetched.clear()
        save_file(tensors, str(tmp_path / "ref"), metadata=metadata)
        hf_io.write_safetensors(str(tmp_path / "ours"), specs, fetch, metadata)
        assert _read(tmp_path / "ours") == _read(tmp_path / "ref")
        # safetensors' order: float32, then bfloat16, then float16; by name within a dtype
        assert fetched == ["layers.10.w", "z", "\u00fc.scalar", "a", "layers.2.w", "b"]
    wrong = {**tensors, "z": tensors["z"].astype(np.float16)}
    with pytest.raises(ValueError, match=r"tensor 'z' is float16\[4, 1\]; the header says F32"):
        hf_io.write_safetensors(None, specs, wrong.__getitem__)


def _bits(params):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(params)]


def test_remote_read_path_equals_memmap_bit_for_bit(qwen3_dir, monkeypatch):
    mesh = _fsdp4_tensor2()
    _, mapped = hf_io.load_hf(qwen3_dir, mesh)
    reads = {}
    real = hf_io._read_rows

    def record(name, info, start, stop):
        reads[name] = reads.get(name, []) + [(start, stop)]
        return real(name, info, start, stop)

    monkeypatch.setattr(hf_io, "_read_rows", record)
    monkeypatch.setattr(hf_io, "_is_local", lambda path: False)  # as if gs://
    _, remote = hf_io.load_hf(qwen3_dir, mesh)
    assert _bits(remote) == _bits(mapped)
    assert jax.tree.map(lambda x: x.sharding, remote) == jax.tree.map(lambda x: x.sharding, mapped)
    # This process holds every shard: each tensor is read whole, in one read.
    tensors = hf_io.read_index(qwen3_dir)
    assert reads == {name: [(0, info.shape[0])] for name, info in tensors.items()}


class _Holds:
    """Stands in for a sharding of which this process holds only the shards `indices`."""

    def __init__(self, *indices):
        self.indices = indices

    def addressable_devices_indices_map(self, shape):
        return dict(enumerate(self.indices))


def test_remote_read_fetches_only_the_rows_this_process_needs(qwen3_dir, monkeypatch):
    # qwen3: D=48, H=6 heads of Dh=16, F=80; HF q_proj is [H*Dh, D], ours wq is [L, D, H, Dh].
    cfg = load_hf_config(qwen3_dir)
    entries = {e.path[-1]: e for e in hf_io.layout(cfg)}
    all_ = slice(None)
    assert hf_io.hf_rows(entries["wq"], (all_, slice(3, 6), all_)) == (48, 96)
    assert hf_io.hf_rows(entries["wq"], (slice(0, 24), all_, all_)) == (0, 96)  # HF columns
    assert hf_io.hf_rows(entries["w_gate"], (all_, slice(40, 80))) == (40, 80)
    assert hf_io.hf_rows(entries["wo"], (all_, all_, slice(24, 48))) == (24, 48)
    assert hf_io.hf_rows(entries["embed"], (slice(60, 120), all_)) == (60, 120)
    tensors = hf_io.read_index(qwen3_dir)
    reads = []
    real = hf_io._read_rows
    monkeypatch.setattr(hf_io, "_read_rows", lambda *a: reads.append(a[2:]) or real(*a))
    holds = _Holds((all_, all_, slice(1, 2), all_), (all_, slice(0, 24), slice(4, 5), all_))
    read = hf_io._shard_reader(entries["wq"], tensors, False, holds, (3, 48, 6, 16))
    name = "model.layers.2.self_attn.q_proj.weight"
    for index in [(all_, slice(1, 2), all_), (slice(0, 24), slice(4, 5), all_)]:
        ref = entries["wq"].to_ours(hf_io._memmap(tensors[name]))[index]
        np.testing.assert_array_equal(read(name, index), ref)
    assert reads == [(16, 80)]  # heads 1..4 of 6, once for both shards


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
    cfg, p1 = hf_io.load_hf(qwen3_dir, _one_device())
    _, p8 = hf_io.load_hf(qwen3_dir, mesh)
    assert len(p1["layers"]["w_gate"].sharding.device_set) == 1
    assert len(p8["layers"]["w_gate"].sharding.device_set) == 8
    _params_equal(p1, p8)


def test_r1jax_checkpoint_roundtrip_and_convert_cli(qwen3_dir, tmp_path):
    dst, back = str(tmp_path / "ours"), str(tmp_path / "back")
    run = [sys.executable, os.path.join(ROOT, "launch", "convert.py")]
    subprocess.run(run + [f"--src={qwen3_dir}", f"--dst={dst}"], check=True)
    subprocess.run(run + [f"--src={dst}", f"--dst={back}", "--to=hf"], check=True)
    _, p0 = hf_io.load_hf(qwen3_dir)
    cfg1, p1 = store.load_model(dst)
    _params_equal(p0, p1)
    _params_equal(p0, hf_io.load_hf(back)[1])
    assert cfg1 == store.load_model(back)[0]


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
    texts = tuple(" ".join(f"w{i}" for i in p) for p in prompts)
    cmd = [
        sys.executable,
        os.path.join(ROOT, "launch", "sample.py"),
        f"--config=configs/sample.py:model={path}",
        f"--workdir={tmp_path / 'out'}",
        "--config.template=plain",
        f"--config.prompts={texts!r}",
        "--config.sampling.greedy=true",
        "--config.sampling.num_samples=1",
        "--config.sampling.max_new_tokens=32",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    rows = [json.loads(line) for line in open(tmp_path / "out" / "samples.jsonl")]
    assert [len(r["token_ids"]) for r in rows] == [32, 32]
    assert len({t for r in rows for t in r["token_ids"]}) > 8  # not a degenerate repetition
    for p, row in zip(prompts, rows, strict=True):
        ref = model.generate(
            torch.tensor([p]), max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        assert row["token_ids"] == ref[0, len(p) :].tolist()
