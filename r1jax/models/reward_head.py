"""A scalar reward model: the transformer plus a linear head on the last token (R1's helpful and
safety reward models).

r(x) = w . h_last + b, where h_last [D] is the final-norm hidden state at the last real token of
`prompt + response + EOS` (the EOS gives every sequence the same reading position) and the head
is a [D] vector plus a scalar bias. Parameters: {"model": transformer params, "head": {w, b}}.
A reward-model directory is an r1jax model directory (loadable as the bare transformer) plus
`reward_head.npz`.
"""

from __future__ import annotations

import io
import math

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import distributed, files
from r1jax import sharding as shd
from r1jax.models import store
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig

f32 = jnp.float32
HEAD_FILE = "reward_head.npz"


def head_specs(cfg: ModelConfig) -> dict:
    return {
        "w": tfm.ParamSpec((cfg.d_model,), ("embed",), "normal"),
        "b": tfm.ParamSpec((), (), "zeros"),
    }


def head_shardings(cfg: ModelConfig, mesh) -> dict:
    return {k: shd.named_sharding(s.axes, s.shape, mesh) for k, s in head_specs(cfg).items()}


def init_head(cfg: ModelConfig, key, mesh) -> dict:
    """w ~ N(0, init_std / sqrt(D)) (initial rewards of order init_std), b = 0; fp32."""
    w = cfg.init_std / math.sqrt(cfg.d_model) * jax.random.normal(key, (cfg.d_model,), f32)
    sh = head_shardings(cfg, mesh)
    return {"w": jax.device_put(w, sh["w"]), "b": jax.device_put(jnp.zeros((), f32), sh["b"])}


def last_token_index(mask_NS):
    """Index of the last real token of each row (left- or right-padded)."""
    S = mask_NS.shape[1]
    return S - 1 - jnp.argmax(mask_NS[:, ::-1] > 0, axis=1)


def scores(params, tokens_NS, mask_NS, cfg: ModelConfig):
    """r [N] (fp32) for rows of tokens with their attention mask; params = {model, head}."""
    mask = mask_NS.astype(jnp.int32)
    h = tfm.forward(params["model"], tokens_NS, tfm.positions_from_mask(mask), mask, cfg)
    h_last = jnp.take_along_axis(h, last_token_index(mask)[:, None, None], axis=1)[:, 0]
    return h_last.astype(f32) @ params["head"]["w"].astype(f32) + params["head"]["b"]


def is_reward_model(path) -> bool:
    return (files.path(store.resolve(str(path))) / HEAD_FILE).exists()


def save(path, params: dict, cfg: ModelConfig, tokenizer_dir=None) -> None:
    """A model directory with the head beside it (reward_head.npz); every process takes part."""
    head = distributed.fetch(params["head"])
    buf = io.BytesIO()
    np.savez(buf, w=np.asarray(head["w"]), b=np.asarray(head["b"]))
    store.save_model(path, params["model"], cfg, tokenizer_dir, {HEAD_FILE: buf.getvalue()})


def load(path, mesh=None, **cfg_overrides) -> tuple[ModelConfig, dict]:
    """(config, {model, head}) from a reward-model directory."""
    if not is_reward_model(path):
        raise FileNotFoundError(f"{path}: no {HEAD_FILE} (not a reward-model directory)")
    mesh = mesh or store.default_mesh()
    cfg, model = store.load_model(path, mesh, **cfg_overrides)
    with (files.path(path) / HEAD_FILE).open("rb") as f, np.load(f) as z:
        w, b = z["w"], z["b"]
    if w.shape != (cfg.d_model,) or b.shape != ():
        raise ValueError(
            f"{path}/{HEAD_FILE}: head w{w.shape} b{b.shape}, expected w({cfg.d_model},) b()"
        )
    sh = head_shardings(cfg, mesh)
    head = {
        "w": distributed.from_host(w.astype(np.float32), sh["w"]),
        "b": distributed.from_host(b, sh["b"]),
    }
    return cfg, {"model": model, "head": head}
