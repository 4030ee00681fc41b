"""Model directories on disk: r1jax's own (orbax) and Hugging Face's, read straight into their
shardings; and the config section that names a model (`init`, `preset`, `overrides`).

An r1jax model directory holds `model_config.json` (the ModelConfig), `params/` (an orbax
checkpoint of the parameter pytree) and, when known, `tokenizer/` (the tokenizer files); a
reward model adds `reward_head.npz` (r1jax.models.reward_head). "embedded" names the small base
model shipped in r1jax/assets/embedded_base. Paths may be local or on GCS (etils.epath).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import orbax.checkpoint as ocp

from r1jax import distributed, files
from r1jax import sharding as shd
from r1jax.errors import FileError, one_line
from r1jax.models import config as model_config
from r1jax.models import hf
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

log = logging.getLogger(__name__)
MODEL_CONFIG = "model_config.json"
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
EMBEDDED_BASE = os.path.join(ASSETS, "embedded_base")


def resolve(path: str) -> str:
    """'embedded' names the shipped embedded base model; anything else is a directory."""
    return EMBEDDED_BASE if path == "embedded" else path


def is_r1jax_model(path) -> bool:
    return (files.path(path) / MODEL_CONFIG).exists()


def is_hf_model(path) -> bool:
    return (files.path(path) / "config.json").exists()


def config_to_json(cfg: ModelConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_json(d: dict, where: str = MODEL_CONFIG) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(d) - fields
    if unknown:
        raise ValueError(f"{where}: unknown ModelConfig fields {sorted(unknown)}")
    d = dict(d)
    if d.get("rope_llama3") is not None:
        d["rope_llama3"] = tuple(d["rope_llama3"])
    d["eos_ids"] = tuple(d.get("eos_ids") or ())
    return ModelConfig(**d)


def save_model(path, params, cfg: ModelConfig, tokenizer_dir=None, extra_files=None) -> None:
    """Writes an r1jax model directory (replacing `path`); every process takes part.
    extra_files: {name: bytes} written beside the model on process 0 (a reward head)."""
    path = files.path(path)
    tmp = path.parent / (path.name + ".tmp")
    if distributed.is_main() and tmp.exists():
        tmp.rmtree()
    distributed.barrier("save_model_start")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp / "params", params)
    if distributed.is_main():
        files.write_json(tmp / MODEL_CONFIG, config_to_json(cfg))
        if tokenizer_dir:
            copy_tokenizer(tokenizer_dir, tmp / "tokenizer")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if path.exists():
            path.rmtree()
        tmp.rename(path)
    distributed.barrier("save_model_end")


def copy_tokenizer(src, dst) -> None:
    src, dst = files.path(src), files.path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        src.copy(dst / src.name, overwrite=True)
        return
    for f in src.iterdir():
        if f.name in hf.TOKENIZER_FILES or f.name.endswith(".model"):
            f.copy(dst / f.name, overwrite=True)


def tokenizer_path(path) -> str | None:
    """Where the tokenizer of a model directory lives (None if it has none)."""
    path = files.path(resolve(str(path)))
    for cand in (path / "tokenizer", path):
        if cand.is_dir() and any(
            f.name in hf.TOKENIZER_FILES or f.name.endswith(".model") for f in cand.iterdir()
        ):
            return str(cand)
    return None


def default_mesh():
    return (
        shd.make_mesh((("fsdp", 1),), jax.devices()[:1])
        if jax.process_count() == 1
        else (shd.make_mesh())
    )


def load_model(path, mesh=None, **cfg_overrides) -> tuple[ModelConfig, dict]:
    """(config, params) from an r1jax or a Hugging Face model directory, into `mesh` (default:
    one device; every device with several processes)."""
    path = files.path(resolve(str(path)))
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {str(path)!r} is not a directory")
    mesh = mesh or default_mesh()
    if is_hf_model(path) and not is_r1jax_model(path):
        return hf.load_hf(str(path), mesh, **cfg_overrides)
    if not is_r1jax_model(path):
        raise FileNotFoundError(f"{path}: neither {MODEL_CONFIG} (r1jax) nor config.json (HF)")
    cfg = config_from_json(json.loads((path / MODEL_CONFIG).read_text()), str(path / MODEL_CONFIG))
    cfg = cfg.replace(**cfg_overrides)
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        tfm.abstract_params(cfg),
        tfm.param_shardings(cfg, mesh),
    )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(path / "params", target)
    except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types; name the file)
        raise FileError(f"{path / 'params'}: unreadable parameters ({one_line(e)})") from e
    return cfg, params


def overrides_of(section) -> dict:
    """The ModelConfig fields a config's `model.overrides` sets (None = keep the model's)."""
    ov = section.get("overrides", {}) or {}
    ov = ov.to_dict() if hasattr(ov, "to_dict") else dict(ov)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in ov.items() if v is not None}


def cpu_safe(section) -> dict:
    """The ModelConfig overrides of `section`, with a bf16/fp16 compute dtype turned into fp32 on
    CPU (one line says so) unless `section.cpu_fp32` is False: XLA:CPU computes low-precision
    dots through fp32 temporaries, slower than fp32 itself (the embedded GRPO run: 1.2-1.4x the CPU
    time, benchmarks/RESULTS.md), and the tests compare CPU runs against fp32 references.
    cpu_fp32=False keeps the dtype (to measure bf16 numerics)."""
    overrides = overrides_of(section)
    low = overrides.get("dtype") in ("bfloat16", "float16")
    if low and jax.default_backend() == "cpu" and section.get("cpu_fp32", True):
        log.warning(
            "compute dtype %s -> float32 on CPU (faster there; model.cpu_fp32=False keeps it)",
            overrides["dtype"],
        )
        return {**overrides, "dtype": "float32"}
    return overrides


def load_or_init(section, mesh, *, vocab_size: int | None = None, seed: int = 0):
    """(ModelConfig, params, tokenizer dir or None) from a config's `model` section.

    init: a model directory (r1jax or Hugging Face), "embedded", or "" for random weights of
    `preset`; overrides: ModelConfig fields (dtype, remat...), None meaning the model's own.
    """
    overrides = cpu_safe(section)
    init = section.get("init", "")
    if init:
        cfg, params = load_model(init, mesh, **overrides)
        return cfg, params, tokenizer_path(init)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    cfg = model_config.get_preset(section.preset, **overrides)
    return cfg, tfm.init_params(cfg, jax.random.key(seed), mesh), None


def config_of(section, *, vocab_size: int | None = None) -> ModelConfig:
    """The ModelConfig a `model` section names, read without loading any weights."""
    overrides = cpu_safe(section)
    init = section.get("init", "")
    if not init:
        if vocab_size is not None:
            overrides.setdefault("vocab_size", vocab_size)
        return model_config.get_preset(section.preset, **overrides)
    path = files.path(resolve(init))
    if (path / MODEL_CONFIG).exists():
        cfg = config_from_json(json.loads((path / MODEL_CONFIG).read_text()), str(path))
        return cfg.replace(**overrides)
    if (path / "config.json").exists():
        hf_cfg = json.loads((path / "config.json").read_text())
        return model_config.from_hf_config(hf_cfg, str(path / "config.json"), **overrides)
    raise FileNotFoundError(f"config.model.init: {init!r} is not a model directory")
