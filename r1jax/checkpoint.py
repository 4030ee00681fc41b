"""Model checkpoints on disk: our own (orbax) format and Hugging Face directories.

An r1jax model directory holds `model_config.json` (the ModelConfig), `params/` (an orbax
checkpoint of the parameter pytree) and, when known, `tokenizer/` (the tokenizer files).
`load_model` reads either that or a Hugging Face directory, restoring parameters straight into
the target shardings. Training-state checkpoints (optimizer, step, data position, RNG) live in
r1jax/train_state.py and reuse these helpers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp

from r1jax import sharding as shd
from r1jax.models import hf
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

MODEL_CONFIG = "model_config.json"


def is_r1jax_model(path: str) -> bool:
    return os.path.exists(os.path.join(path, MODEL_CONFIG))


def is_hf_model(path: str) -> bool:
    return os.path.exists(os.path.join(path, "config.json"))


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


def save_model(path: str, params, cfg: ModelConfig, tokenizer_dir: str | None = None) -> None:
    """Writes an r1jax model directory (overwriting `path`)."""
    path = os.path.abspath(path)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(tmp, "params"), params)
    with open(os.path.join(tmp, MODEL_CONFIG), "w") as f:
        json.dump(config_to_json(cfg), f, indent=2)
    if tokenizer_dir:
        copy_tokenizer(tokenizer_dir, os.path.join(tmp, "tokenizer"))
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def copy_tokenizer(src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    if os.path.isfile(src):
        shutil.copy(src, dst)
        return
    for name in os.listdir(src):
        if name in hf.TOKENIZER_FILES or name.endswith(".model"):
            shutil.copy(os.path.join(src, name), dst)


def tokenizer_path(path: str) -> str | None:
    """Where the tokenizer of a model directory lives (None if it has none)."""
    for cand in (os.path.join(path, "tokenizer"), path):
        if os.path.isdir(cand) and any(
            n in hf.TOKENIZER_FILES or n.endswith(".model") for n in os.listdir(cand)
        ):
            return cand
    return None


def load_model(path: str, mesh=None, **cfg_overrides) -> tuple[ModelConfig, dict]:
    """(config, params) from an r1jax or a Hugging Face model directory."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path!r} is not a directory")
    path = os.path.abspath(path)  # orbax wants absolute paths
    mesh = mesh or shd.make_mesh((("fsdp", 1),), jax.devices()[:1])
    if is_hf_model(path) and not is_r1jax_model(path):
        return hf.load_hf(path, mesh, **cfg_overrides)
    if not is_r1jax_model(path):
        raise FileNotFoundError(f"{path}: neither {MODEL_CONFIG} (r1jax) nor config.json (HF)")
    with open(os.path.join(path, MODEL_CONFIG)) as f:
        cfg = config_from_json(json.load(f), os.path.join(path, MODEL_CONFIG))
    cfg = cfg.replace(**cfg_overrides)
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        tfm.abstract_params(cfg),
        tfm.param_shardings(cfg, mesh),
    )
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(os.path.join(path, "params"), target)
    return cfg, params
