"""Hugging Face checkpoints (config.json + safetensors) in and out, one tensor at a time, on one
host or on many (JAX multi-controller: every process calls `load_hf` / `save_hf` alike).

Import validates everything first (config features, every tensor's presence, shape and
dtype) from the safetensors *headers*, before a single parameter is allocated. Then each
parameter is created directly in its target sharding with `jax.make_array_from_callback`, which
asks only for the shards of this process's devices. A local file is memory-mapped and sliced; a
remote one (`gs://...`, through `etils.epath`) gets one ranged read per tensor covering the HF
rows that this process's shards touch.

Export streams the safetensors files: the header comes from the config alone, then each tensor
is gathered (a collective every process joins), converted and appended by process 0, so the
host holds one tensor at a time. The bytes depend only on the values: they equal
`safetensors.numpy.save_file`'s for the same tensors, from any mesh.

Our layout differs from HF's only by transposes/reshapes (HF Linear weights are [out, in]; ours
are [in, heads, head_dim] etc.) and by stacking layers, so import -> export -> import is exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import struct
import uuid
from collections.abc import Callable

import jax
import ml_dtypes
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from r1jax import files
from r1jax import sharding as shd
from r1jax.errors import FileError
from r1jax.models import config as config_lib
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,  # DeepSeek-V3/R1 release weights, with block scales
}
FP8_BLOCK = 128  # the official DeepSeek-V3 checkpoints' weight_block_size is [128, 128]
_SAVE_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
# safetensors' Dtype enum order; its writer puts larger ones first (alignment), then sorts by name.
_DTYPE_RANK = {"F16": 0, "BF16": 1, "F32": 2}
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


class CheckpointError(FileError):
    """The checkpoint on disk does not match what the config says it should contain."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    file: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file


def _nbytes(dtype: str, shape) -> int:
    return np.dtype(_DTYPES[dtype]).itemsize * math.prod(shape)


def _is_local(path: str) -> bool:
    """Whether `path` can be memory-mapped (no URI scheme such as gs://)."""
    return "://" not in os.fspath(path)


def _read_header(file: epath.Path) -> dict[str, TensorInfo]:
    """The tensors of a safetensors file, checked against the file's size before anything is
    mapped (a truncated file would otherwise fail inside mmap, naming nothing)."""
    size = file.stat().length
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{file}: header of {n} bytes in a {size}-byte file (corrupt)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{file}: the safetensors header is not JSON (corrupt)") from None
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, stop = meta["data_offsets"]
        dtype, shape = meta["dtype"], meta["shape"]
        sized = dtype not in _DTYPES or stop - start == _nbytes(dtype, shape)
        if not sized or 8 + n + stop > size:
            raise CheckpointError(
                f"{file}: tensor {name!r} needs bytes {8 + n + start}..{8 + n + stop} of a "
                f"{size}-byte file (truncated or corrupt)"
            )
        out[name] = TensorInfo(os.fspath(file), meta["dtype"], tuple(meta["shape"]), 8 + n + start)
    return out


def read_index(path: str) -> dict[str, TensorInfo]:
    """All tensors of a HF directory: one model.safetensors or several with an index."""
    root = epath.Path(path)
    index = root / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in root.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files")
    tensors = {}
    for name in files:
        if not (root / name).exists():
            raise CheckpointError(f"{index}: lists {name}, which does not exist")
        tensors.update(_read_header(root / name))
    return tensors


def _load_config(path: str, overrides) -> ModelConfig:
    if _is_local(path):
        return config_lib.load_hf_config(path, **overrides)
    file = epath.Path(path) / "config.json"
    if not file.exists():
        raise FileNotFoundError(f"{file}: no config.json (is {path!r} a Hugging Face model dir?)")
    try:
        hf = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: invalid JSON at line {e.lineno}: {e.msg}") from e
    return config_lib.from_hf_config(hf, where=os.fspath(file), **overrides)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One of our parameters and the HF tensor(s) it comes from (one per layer if stacked)."""

    path: tuple[str, ...]
    names: tuple[str, ...]
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    stacked: bool
    experts: int = 0  # > 0: names[i] is a tuple of one HF tensor per expert, stacked on axis 1

    @property
    def lead(self) -> int:  # our leading axes that index HF tensors (layer, expert)
        return int(self.stacked) + int(self.experts > 0)

    def flat_names(self):
        return [n for ns in self.names for n in (ns if self.experts else (ns,))]


def layout(cfg: ModelConfig) -> list[Entry]:
    D, H, K, Dh, F, V = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.d_ff,
        cfg.vocab_size,
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
    per_layer.update(_moe_mla_layout(cfg))
    specs = tfm.param_specs(cfg)
    entries = [Entry(("embed",), ("model.embed_tokens.weight",), (V, D), ident, ident, False)]
    first = 0
    for stack in ("layers", "moe_layers"):
        n = specs[stack]["attn_norm"].shape[0] if stack in specs else 0
        for key in specs.get(stack, {}):
            suffix, shape, to_ours, to_hf = per_layer[key]
            ids = range(first, first + n)
            if "{e}" in suffix:  # one tensor per expert
                names = tuple(
                    tuple(f"model.layers.{i}.{suffix.format(e=j)}" for j in range(cfg.n_experts))
                    for i in ids
                )
                entries.append(
                    Entry((stack, key), names, shape, to_ours, to_hf, True, cfg.n_experts)
                )
            else:
                names = tuple(f"model.layers.{i}.{suffix}" for i in ids)
                entries.append(Entry((stack, key), names, shape, to_ours, to_hf, True))
        first += n
    entries.append(Entry(("final_norm",), ("model.norm.weight",), (D,), ident, ident, False))
    if "lm_head" in specs:
        entries.append(Entry(("lm_head",), ("lm_head.weight",), (V, D), ident, ident, False))
    return entries


def rope_permutation(dim: int, interleaved: bool) -> np.ndarray:
    """HF interleaved RoPE pairs (x0, x1), (x2, x3), ... -> our halves [x0, x2, ...; x1, x3, ...].

    Applied to the rows that make the RoPE parts of q and k, it turns DeepSeek's interleaved
    rotation into our rotate-half one; q.k is unchanged since both sides are permuted alike."""
    if not interleaved:
        return np.arange(dim)
    return np.concatenate([np.arange(0, dim, 2), np.arange(1, dim, 2)])


def _moe_mla_layout(cfg: ModelConfig) -> dict:
    """per_layer entries of the MLA and MoE parameters (see `layout`)."""
    D, H, E, Dr, Dv, R = (
        cfg.d_model,
        cfg.n_heads,
        cfg.head_dim,
        cfg.qk_rope_dim,
        cfg.v_head_dim,
        cfg.kv_lora_rank,
    )
    T = lambda x: x.T  # noqa: E731
    ident = lambda x: x  # noqa: E731
    out = {}
    if cfg.n_experts:
        Fe, Fs, X = cfg.moe_d_ff, cfg.n_shared_experts * cfg.moe_d_ff, cfg.n_experts
        out.update(
            router=("mlp.gate.weight", (X, D), T, T),
            router_bias=("mlp.gate.e_score_correction_bias", (X,), ident, ident),
            we_gate=("mlp.experts.{e}.gate_proj.weight", (Fe, D), T, T),
            we_up=("mlp.experts.{e}.up_proj.weight", (Fe, D), T, T),
            we_down=("mlp.experts.{e}.down_proj.weight", (D, Fe), T, T),
            ws_gate=("mlp.shared_experts.gate_proj.weight", (Fs, D), T, T),
            ws_up=("mlp.shared_experts.up_proj.weight", (Fs, D), T, T),
            ws_down=("mlp.shared_experts.down_proj.weight", (D, Fs), T, T),
        )
    if not cfg.kv_lora_rank:
        return out
    perm = rope_permutation(Dr, cfg.rope_interleave)
    q_perm = np.concatenate([np.arange(E), E + perm])
    kv_perm = np.concatenate([np.arange(R), R + perm])
    q_inv, kv_inv = np.argsort(q_perm), np.argsort(kv_perm)

    def q_proj(n_in):  # HF [H*(E+Dr), n_in] <-> ours [n_in, H, E+Dr], RoPE rows permuted
        return (
            lambda x: x.T.reshape(n_in, H, E + Dr)[..., q_perm],
            lambda x: x[..., q_inv].reshape(n_in, H * (E + Dr)).T,
        )

    Rq = cfg.q_lora_rank
    out.update(
        wq=("self_attn.q_proj.weight", (H * (E + Dr), D), *q_proj(D)),
        wq_a=("self_attn.q_a_proj.weight", (Rq, D), T, T),
        q_a_norm=("self_attn.q_a_layernorm.weight", (Rq,), ident, ident),
        wq_b=("self_attn.q_b_proj.weight", (H * (E + Dr), Rq), *q_proj(Rq)),
        wkv_a=(
            "self_attn.kv_a_proj_with_mqa.weight",
            (R + Dr, D),
            lambda x: x.T[:, kv_perm],
            lambda x: x[:, kv_inv].T,
        ),
        kv_a_norm=("self_attn.kv_a_layernorm.weight", (R,), ident, ident),
        wkv_b=(
            "self_attn.kv_b_proj.weight",
            (H * (E + Dv), R),
            lambda x: x.T.reshape(R, H, E + Dv),
            lambda x: x.reshape(R, H * (E + Dv)).T,
        ),
        wo=(
            "self_attn.o_proj.weight",
            (D, H * Dv),
            lambda x: x.T.reshape(H, Dv, D),
            lambda x: x.reshape(H * Dv, D).T,
        ),
    )
    return out


def dequantize_fp8(w, scale_inv, block: int = FP8_BLOCK) -> np.ndarray:
    """An E4M3 weight [out, in] times its per-block scale [ceil(out/b), ceil(in/b)], in fp32."""
    full = np.repeat(np.repeat(np.asarray(scale_inv, np.float32), block, 0), block, 1)
    return np.asarray(w).astype(np.float32) * full[: w.shape[0], : w.shape[1]]


def validate(cfg: ModelConfig, tensors: dict[str, TensorInfo], where: str) -> None:
    """Every expected tensor present with the right shape and a float dtype; nothing unknown."""
    expected = set()
    for e in layout(cfg):
        for name in e.flat_names():
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
            if info.dtype == "F8_E4M3":
                _check_scale(name, info, tensors, where)
                expected.add(name + "_scale_inv")
    allowed_extra = {"lm_head.weight"} if cfg.tie_embeddings else set()
    for name in tensors:
        if _is_mtp(name, cfg):  # DeepSeek-V3's multi-token-prediction layer: loaded, ignored
            continue
        if name not in expected and name not in allowed_extra:
            if not name.endswith(_IGNORED_SUFFIXES):
                raise CheckpointError(
                    f"{where}: unexpected tensor {name!r} (a feature this model code does not "
                    "implement?)"
                )


def _is_mtp(name: str, cfg: ModelConfig) -> bool:
    m = re.match(r"model\.layers\.(\d+)\.", name)
    return cfg.arch == "deepseek_v3" and m is not None and int(m.group(1)) >= cfg.n_layers


def _check_scale(name, info: TensorInfo, tensors, where) -> None:
    scale = tensors.get(name + "_scale_inv")
    want = tuple(-(-n // FP8_BLOCK) for n in info.shape)
    if scale is None or scale.shape != want or scale.dtype not in ("F32", "BF16"):
        raise CheckpointError(
            f"{where}: FP8 tensor {name!r} needs {name}_scale_inv of shape {list(want)} "
            f"(fp32/bf16 {FP8_BLOCK}x{FP8_BLOCK} block scales), got "
            f"{None if scale is None else (scale.dtype, list(scale.shape))}"
        )


def _get(params, path):
    for p in path:
        params = params[p]
    return params


def _memmap(info: TensorInfo) -> np.ndarray:
    return np.memmap(info.file, _DTYPES[info.dtype], "r", info.offset, info.shape)


def _coords(shape: tuple[int, ...], axis: int, start: int = 0) -> np.ndarray:
    """A zero-copy array of `shape` whose elements are their own index along `axis`, minus start.

    Sent through an Entry's to_ours (transposes and reshapes, all views) and sliced, it says
    which HF elements a slice of our layout is made of, without touching the tensor."""
    line = np.arange(-start, shape[axis] - start)
    strides = [0] * len(shape)
    strides[axis] = line.strides[0]
    return np.lib.stride_tricks.as_strided(line, shape, strides, writeable=False)


def hf_rows(e: Entry, index) -> tuple[int, int]:
    """[start, stop) along the HF tensor's first axis of the elements in our-layout `index`."""
    rows = e.to_ours(_coords(e.hf_shape, 0))[index]
    return int(rows.min()), int(rows.max()) + 1


def _read_rows(name: str, info: TensorInfo, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of a tensor in one ranged read (contiguous bytes; any epath filesystem)."""
    row = _nbytes(info.dtype, info.shape[1:])
    with epath.Path(info.file).open("rb") as f:
        f.seek(info.offset + start * row)
        data = f.read((stop - start) * row)
    if len(data) != (stop - start) * row:
        raise CheckpointError(f"{info.file}: tensor {name!r} is truncated")
    return np.frombuffer(data, _DTYPES[info.dtype]).reshape((stop - start,) + info.shape[1:])


def _read_full(name: str, tensors) -> np.ndarray:
    """A whole tensor in its stored dtype, FP8 ones dequantized with their block scales."""
    info = tensors[name]
    data = _read_rows(name, info, 0, info.shape[0])
    if info.dtype != "F8_E4M3":
        return data
    scale = tensors[name + "_scale_inv"]
    return dequantize_fp8(data, _read_rows(name + "_scale_inv", scale, 0, scale.shape[0]))


def _shard_reader(e: Entry, tensors, local: bool, sharding, shape) -> Callable:
    """read(name, index): our-layout slice `index` of HF tensor `name` (one layer if stacked)."""
    if any(tensors[n].dtype == "F8_E4M3" for n in e.flat_names()):
        return lambda name, index: e.to_ours(_read_full(name, tensors))[index]
    if local:
        return lambda name, index: e.to_ours(_memmap(tensors[name]))[index]
    # Remote: the rows that all of this process's shards need, read once per tensor. A shard
    # split along HF columns still reads whole rows (a contiguous range, not one read per row).
    spans = [
        hf_rows(e, index[e.lead :])
        for index in sharding.addressable_devices_indices_map(shape).values()
    ]
    start, stop = min(s for s, _ in spans), max(s for _, s in spans)
    cache: dict[str, np.ndarray] = {}

    def read(name, index):
        if name not in cache:
            cache[name] = _read_rows(name, tensors[name], start, stop)
        sel = tuple(
            e.to_ours(_coords(e.hf_shape, a, start if a == 0 else 0))[index]
            for a in range(len(e.hf_shape))
        )
        return cache[name][sel]

    return read


def load_hf(path: str, mesh=None, **cfg_overrides) -> tuple[ModelConfig, dict]:
    """(config, params) from a HF directory (local, or remote such as gs://...), straight into
    the mesh's shardings. `mesh` is the global mesh (default: all devices on the "fsdp" axis);
    in a multi-process job every process calls this alike and reads only its devices' shards."""
    path = os.fspath(path)
    cfg = _load_config(path, cfg_overrides)
    tensors = read_index(path)
    validate(cfg, tensors, path)
    mesh = mesh if mesh is not None else shd.make_mesh((("fsdp", -1),))
    specs, shardings = tfm.param_specs(cfg), tfm.param_shardings(cfg, mesh)
    dtype = np.dtype(cfg.param_dtype)
    params: dict = {"layers": {}}  # (an empty dense stack still has its key)
    for e in layout(cfg):
        shape, sharding = _get(specs, e.path).shape, _get(shardings, e.path)
        read = _shard_reader(e, tensors, _is_local(path), sharding, shape)

        def callback(index, e=e, read=read, shape=shape):
            if not e.stacked:
                return np.array(read(e.names[0], index), dtype)  # a copy, not the mmap
            layers = range(*index[0].indices(shape[0]))
            if not layers:  # an empty stack (a MoE model without dense layers)
                return np.zeros(shape, dtype)[index]
            if not e.experts:
                return np.stack([read(e.names[i], index[1:]) for i in layers]).astype(dtype)
            experts = range(*index[1].indices(e.experts))
            rows = [np.stack([read(e.names[i][j], index[2:]) for j in experts]) for i in layers]
            return np.stack(rows).astype(dtype)

        arr = jax.make_array_from_callback(shape, sharding, callback)
        if e.stacked:
            params.setdefault(e.path[0], {})[e.path[-1]] = arr
        else:
            params[e.path[-1]] = arr
    return cfg, params


def safetensors_header(specs: dict[str, tuple[str, tuple[int, ...]]], metadata=None):
    """(header bytes, tensor order) of a safetensors file of tensors {name: (dtype, shape)}.

    The bytes `safetensors`' own writer produces: tensors by descending dtype then name,
    offsets in that order, compact JSON with __metadata__ first, spaces to a multiple of 8."""
    order = sorted(specs, key=lambda n: (-_DTYPE_RANK[specs[n][0]], n))
    header: dict = {} if metadata is None else {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name in order:
        dtype, shape = specs[name]
        size = _nbytes(dtype, shape)
        header[name] = dict(dtype=dtype, shape=list(shape), data_offsets=[offset, offset + size])
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def write_safetensors(file: str | None, specs, fetch: Callable[[str], np.ndarray], metadata=None):
    """Streams a safetensors file: the header from `specs`, then fetch(name) in file order.

    One tensor is in memory at a time. With file=None nothing is written, but fetch is called
    for the same tensors in the same order (how other processes join process 0's gathers)."""
    header, order = safetensors_header(specs, metadata)
    with files.path(file).open("wb") if file else contextlib.nullcontext() as f:
        if f:
            f.write(header)
        for name in order:
            arr, (dtype, shape) = fetch(name), specs[name]
            if arr.dtype != np.dtype(_DTYPES[dtype]) or arr.shape != tuple(shape):
                raise ValueError(
                    f"{file}: tensor {name!r} is {arr.dtype}{list(arr.shape)}; the header says "
                    f"{dtype}{list(shape)}"
                )
            if f:
                f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


_take = jax.jit(lambda x, i: x[i])


def _host_value(x, i: int | None) -> np.ndarray:
    """x (or x[i]) as a NumPy array on every process: a collective if x spans processes."""
    if not isinstance(x, jax.Array):
        return np.asarray(x if i is None else x[i])
    if i is not None:
        x = _take(x, i)
    if x.is_fully_addressable:
        return np.asarray(x)
    return multihost_utils.process_allgather(x, tiled=True)


def _natural(name: str) -> list:  # "layers.2" before "layers.10"
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split_files(specs, max_bytes: int) -> dict[str, list[str]]:
    """{file name: tensor names}: model order, a new file before one would pass max_bytes."""
    groups: list[list[str]] = [[]]
    size = 0
    for name in sorted(specs, key=_natural):
        nbytes = _nbytes(*specs[name])
        if groups[-1] and size + nbytes > max_bytes:
            groups, size = groups + [[]], 0
        groups[-1].append(name)
        size += nbytes
    n = len(groups)
    if n == 1:
        return {"model.safetensors": groups[0]}
    return {f"model-{i + 1:05d}-of-{n:05d}.safetensors": g for i, g in enumerate(groups)}


def save_hf(
    params,
    cfg: ModelConfig,
    path: str,
    *,
    dtype: str = "float32",
    tokenizer_dir: str | None = None,
    max_shard_bytes: int = 5 * 10**9,
) -> None:
    """Writes a directory that transformers' from_pretrained loads (several files and an index
    above max_shard_bytes). Every process must call it: the gathers are collectives; process 0
    alone writes, and all return once it is done. Atomic: a temp dir is filled and renamed into
    place, so a crash never leaves a half-written checkpoint."""
    if dtype not in _SAVE_DTYPES:
        raise ValueError(f"save_hf: dtype {dtype!r}; expected one of {sorted(_SAVE_DTYPES)}")
    st_dtype = _SAVE_DTYPES[dtype]
    expected = tfm.param_specs(cfg)
    sources: dict[str, tuple[Entry, int | None]] = {}
    for e in layout(cfg):
        got, want = tuple(_get(params, e.path).shape), _get(expected, e.path).shape
        if got != want:
            raise ValueError(f"save_hf: params{list(e.path)} has shape {got}, config: {want}")
        if e.experts:
            for i, ns in enumerate(e.names):
                sources.update({n: (e, (i, j)) for j, n in enumerate(ns)})
        else:
            sources.update({n: (e, i if e.stacked else None) for i, n in enumerate(e.names)})
    specs = {name: (st_dtype, e.hf_shape) for name, (e, _) in sources.items()}

    def fetch(name):
        e, i = sources[name]
        value = e.to_hf(_host_value(_get(params, e.path), i))
        return np.ascontiguousarray(value.astype(_DTYPES[st_dtype]))

    shards = _split_files(specs, max_shard_bytes)
    out, tmp = files.path(path), None
    if jax.process_index() == 0:  # written aside, then renamed: never a half-written directory
        tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
    try:
        for fname, names in shards.items():
            file = tmp / fname if tmp else None
            write_safetensors(file, {n: specs[n] for n in names}, fetch, {"format": "pt"})
        if tmp:
            _write_extras(tmp, cfg, dtype, tokenizer_dir, specs, shards)
            if out.exists():
                out.rmtree()
            tmp.rename(out)
    except BaseException:
        if tmp and tmp.exists():
            tmp.rmtree()
        raise
    if jax.process_count() > 1:  # nobody goes on to read `path` before process 0 is done
        multihost_utils.sync_global_devices(f"r1jax.save_hf:{path}")


def _write_extras(tmp, cfg, dtype, tokenizer_dir, specs, shards) -> None:
    """Index (if several files), tokenizer files and config.json: process 0 only."""
    if len(shards) > 1:  # as transformers writes it
        index = {
            "metadata": {"total_size": sum(_nbytes(*spec) for spec in specs.values())},
            "weight_map": {n: f for f, names in shards.items() for n in names},
        }
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2, sort_keys=True) + "\n"
        )
    if tokenizer_dir:
        for fname in TOKENIZER_FILES:
            src = files.path(tokenizer_dir) / fname
            if src.exists():
                src.copy(tmp / fname)
    (tmp / "config.json").write_text(json.dumps(config_lib.to_hf_config(cfg, dtype), indent=2))
