"""Hugging Face checkpoints (config.json + safetensors) in and out, one tensor at a time.

Import validates everything first (config features, every tensor's presence, shape and
dtype) from the safetensors *headers*, before a single parameter is allocated. Then each
parameter is created directly in its target sharding with `jax.make_array_from_callback`: every
device's shard is read from memory-mapped files, so neither the host nor one device ever
holds the whole model.

Our layout differs from HF's only by transposes/reshapes (HF Linear weights are [out, in]; ours
are [in, heads, head_dim] etc.) and by stacking layers, so import -> export -> import is exact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable

import jax
import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from r1jax.models import config as config_lib
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


class CheckpointError(ValueError):
    """The checkpoint on disk does not match what the config says it should contain."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    file: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file


def _read_header(file: str) -> dict[str, TensorInfo]:
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, _ = meta["data_offsets"]
        out[name] = TensorInfo(file, meta["dtype"], tuple(meta["shape"]), 8 + n + start)
    return out


def read_index(path: str) -> dict[str, TensorInfo]:
    """All tensors of a HF directory: one model.safetensors or several with an index."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files")
    tensors = {}
    for name in files:
        file = os.path.join(path, name)
        if not os.path.exists(file):
            raise CheckpointError(f"{index}: lists {name}, which does not exist")
        tensors.update(_read_header(file))
    return tensors


def _memmap(info: TensorInfo) -> np.ndarray:
    dtype = np.dtype(_DTYPES[info.dtype])
    count = int(np.prod(info.shape))
    mm = np.memmap(info.file, dtype=dtype, mode="r", offset=info.offset, shape=(count,))
    return mm.reshape(info.shape)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One of our parameters and the HF tensor(s) it comes from (one per layer if stacked)."""

    path: tuple[str, ...]
    names: tuple[str, ...]
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    stacked: bool


def layout(cfg: ModelConfig) -> list[Entry]:
    D, H, K, Dh, F, V, L = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.d_ff,
        cfg.vocab_size,
        cfg.n_layers,
    )
    ident = lambda x: x  # noqa: E731
    T = lambda x: x.T  # noqa: E731

    def proj_in(n):  # HF [n*Dh, D] <-> ours [D, n, Dh]
        return (lambda x: x.T.reshape(D, n, Dh)), (lambda x: x.reshape(D, n * Dh).T)

    def bias(n):
        return (lambda x: x.reshape(n, Dh)), (lambda x: x.reshape(n * Dh))

    per_layer = {  # ours -> (hf suffix, hf shape, to_ours, to_hf)
        "attn_norm": ("input_layernorm.weight", (D,), ident, ident),
        "wq": ("self_attn.q_proj.weight", (H * Dh, D), *proj_in(H)),
        "wk": ("self_attn.k_proj.weight", (K * Dh, D), *proj_in(K)),
        "wv": ("self_attn.v_proj.weight", (K * Dh, D), *proj_in(K)),
        "wo": (
            "self_attn.o_proj.weight",
            (D, H * Dh),
            lambda x: x.T.reshape(H, Dh, D),
            lambda x: x.reshape(H * Dh, D).T,
        ),
        "mlp_norm": ("post_attention_layernorm.weight", (D,), ident, ident),
        "w_gate": ("mlp.gate_proj.weight", (F, D), T, T),
        "w_up": ("mlp.up_proj.weight", (F, D), T, T),
        "w_down": ("mlp.down_proj.weight", (D, F), T, T),
        "bq": ("self_attn.q_proj.bias", (H * Dh,), *bias(H)),
        "bk": ("self_attn.k_proj.bias", (K * Dh,), *bias(K)),
        "bv": ("self_attn.v_proj.bias", (K * Dh,), *bias(K)),
        "q_norm": ("self_attn.q_norm.weight", (Dh,), ident, ident),
        "k_norm": ("self_attn.k_norm.weight", (Dh,), ident, ident),
    }
    specs = tfm.param_specs(cfg)
    entries = [Entry(("embed",), ("model.embed_tokens.weight",), (V, D), ident, ident, False)]
    for key in specs["layers"]:
        suffix, shape, to_ours, to_hf = per_layer[key]
        names = tuple(f"model.layers.{i}.{suffix}" for i in range(L))
        entries.append(Entry(("layers", key), names, shape, to_ours, to_hf, True))
    entries.append(Entry(("final_norm",), ("model.norm.weight",), (D,), ident, ident, False))
    if "lm_head" in specs:
        entries.append(Entry(("lm_head",), ("lm_head.weight",), (V, D), ident, ident, False))
    return entries


def validate(cfg: ModelConfig, tensors: dict[str, TensorInfo], where: str) -> None:
    """Every expected tensor present with the right shape and a float dtype; nothing unknown."""
    expected = set()
    for e in layout(cfg):
        for name in e.names:
            expected.add(name)
            if name not in tensors:
                raise CheckpointError(f"{where}: missing tensor {name!r}")
            info = tensors[name]
            if info.shape != e.hf_shape:
                raise CheckpointError(
                    f"{where}: tensor {name!r} has shape {list(info.shape)}, expected "
                    f"{list(e.hf_shape)} from config.json"
                )
            if info.dtype not in _DTYPES:
                raise CheckpointError(
                    f"{where}: tensor {name!r} has dtype {info.dtype}; expected one of "
                    f"{sorted(_DTYPES)}"
                )
    allowed_extra = {"lm_head.weight"} if cfg.tie_embeddings else set()
    for name in tensors:
        if name not in expected and name not in allowed_extra:
            if not name.endswith(_IGNORED_SUFFIXES):
                raise CheckpointError(
                    f"{where}: unexpected tensor {name!r} (a feature this model code does not "
                    "implement?)"
                )


def _get(params, path):
    for p in path:
        params = params[p]
    return params


def load_hf(path: str, mesh=None, **cfg_overrides) -> tuple[ModelConfig, dict]:
    """(config, params) from a HF directory, straight into the mesh's shardings."""
    cfg = config_lib.load_hf_config(path, **cfg_overrides)
    tensors = read_index(path)
    validate(cfg, tensors, path)
    mesh = mesh or tfm.shd.make_mesh((("fsdp", 1),), jax.devices()[:1])
    shardings = tfm.param_shardings(cfg, mesh)
    dtype = np.dtype(cfg.param_dtype)
    last: dict[str, np.ndarray] = {}  # the most recent tensor: replicated shards reuse it

    def read(name, to_ours):
        if name not in last:
            last.clear()
            last[name] = np.ascontiguousarray(to_ours(_memmap(tensors[name])))
        return last[name]

    params: dict = {"layers": {}}
    for e in layout(cfg):
        shape = (
            (cfg.n_layers,) + tfm.param_specs(cfg)["layers"][e.path[1]].shape[1:]
            if e.stacked
            else _get(tfm.param_specs(cfg), e.path).shape
        )

        def callback(index, e=e):
            if not e.stacked:
                return read(e.names[0], e.to_ours)[index].astype(dtype)
            layers = range(*index[0].indices(cfg.n_layers))
            return np.stack([read(e.names[i], e.to_ours)[index[1:]] for i in layers]).astype(dtype)

        arr = jax.make_array_from_callback(shape, _get(shardings, e.path), callback)
        (params["layers"] if e.stacked else params)[e.path[-1]] = arr
    return cfg, params


def save_hf(
    params,
    cfg: ModelConfig,
    path: str,
    *,
    dtype: str = "float32",
    tokenizer_dir: str | None = None,
    max_shard_bytes: int = 2 << 30,
) -> None:
    """Writes a directory that transformers' from_pretrained loads. Atomic: a temp dir is
    filled and renamed into place, so a crash never leaves a half-written checkpoint."""
    np_dtype = np.dtype(_DTYPES[{"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[dtype]])
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for e in layout(cfg):
        leaf = _get(params, e.path)
        for i, name in enumerate(e.names):
            part = leaf[i] if e.stacked else leaf
            arr = np.ascontiguousarray(e.to_hf(np.asarray(jax.device_get(part))).astype(np_dtype))
            if size and size + arr.nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = arr
            size += arr.nbytes
    if len(shards) == 1:
        save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(tmp, fname), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(a.nbytes for s in shards for a in s.values())
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if tokenizer_dir:
        for fname in TOKENIZER_FILES:
            if os.path.exists(os.path.join(tokenizer_dir, fname)):
                shutil.copy(os.path.join(tokenizer_dir, fname), tmp)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(config_lib.to_hf_config(cfg, dtype), f, indent=2)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.rename(tmp, path)
