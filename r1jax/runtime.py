"""Plumbing shared by the training loops: mesh, model and tokenizer set-up, state, batches.

Everything here is built from shapes first: the model comes from a checkpoint restored into its
shardings, or from `init_params` jitted with output shardings; the optimizer state is created by
a jitted `init` on the sharded parameters. Nothing is ever materialised on one device first.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint
from r1jax import sharding as shd
from r1jax.models import config as model_config
from r1jax.models import transformer as tfm
from r1jax.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
EMBEDDED_BASE = os.path.join(ASSETS, "embedded_base")


def make_mesh(config) -> jax.sharding.Mesh:
    mesh = shd.make_mesh([tuple(a) for a in config.mesh])
    log.info("mesh %s over %d %s devices", dict(mesh.shape), mesh.size, jax.default_backend())
    return mesh


def resolve_model_path(path: str) -> str:
    """'embedded' names the shipped embedded base model; anything else is a directory."""
    return EMBEDDED_BASE if path == "embedded" else path


def load_or_init_model(mcfg, mesh, vocab_size: int | None = None, seed: int = 0):
    """(ModelConfig, params, tokenizer dir or None) from config.model.

    config.model.init: a model directory (r1jax or Hugging Face), "embedded", or "" for random
    weights of config.model.preset. config.model.overrides: ModelConfig fields (dtype, remat...).
    """
    overrides = dict(mcfg.get("overrides", {}) or {})
    init = mcfg.get("init", "")
    if init:
        path = resolve_model_path(init)
        cfg, params = checkpoint.load_model(path, mesh, **overrides)
        return cfg, params, checkpoint.tokenizer_path(path)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    cfg = model_config.get_preset(mcfg.preset, **overrides)
    return cfg, tfm.init_params(cfg, jax.random.key(seed), mesh), None


def load_tok(path: str | None, where: str = "config.tokenizer"):
    if not path:
        raise ValueError(f"{where}: no tokenizer (the model directory has none; set its path)")
    return load_tokenizer(path)


def init_state(params, optimizer, mesh) -> dict:
    """{params, opt_state, step}; optimizer state created sharded like the parameters, and
    every other leaf (counters) replicated on the mesh, so the jitted step sees one sharding."""
    opt_state = jax.jit(optimizer.init)(params)
    state = {"params": params, "opt_state": opt_state, "step": jnp.zeros((), jnp.int32)}
    rep = shd.replicated(mesh)

    def on_mesh(a):
        s = a.sharding
        return (
            a
            if isinstance(s, jax.sharding.NamedSharding) and s.mesh == mesh
            else jax.device_put(a, rep)
        )

    return jax.tree.map(on_mesh, state)


def shardings_of(tree):
    return jax.tree.map(lambda a: a.sharding, tree)


def micro_split(arrays: dict[str, np.ndarray], micro: int) -> dict[str, np.ndarray]:
    """[M, ...] -> [M // micro, micro, ...] (host side, so device shards stay put)."""
    out = {}
    for k, a in arrays.items():
        if a.shape[0] % micro:
            raise ValueError(
                f"batch of {a.shape[0]} rows does not split into micro-batches of {micro}"
            )
        out[k] = a.reshape((a.shape[0] // micro, micro) + a.shape[1:])
    return out


def batch_shardings(mesh, arrays: dict[str, np.ndarray]) -> dict:
    """Micro-batched arrays are split over the batch axes on their second (row) axis."""
    return {
        k: shd.named_sharding((None, "batch") + (None,) * (a.ndim - 2), a.shape, mesh)
        for k, a in arrays.items()
    }


def put_batch(mesh, arrays: dict[str, np.ndarray]):
    s = batch_shardings(mesh, arrays)
    return {k: jax.device_put(a, s[k]) for k, a in arrays.items()}, s


def put_prompts(mesh, tokens_BP: np.ndarray, mask_BP: np.ndarray):
    """Prompts split over the mesh's batch axes when B divides, else replicated; the sampler's
    rows (prompt-major, B*G) then follow the prompts' split."""
    b = tokens_BP.shape[0]
    s = shd.batch_sharding(mesh, 2, b) if b % shd.batch_divisor(mesh) == 0 else shd.replicated(mesh)
    return jax.device_put(tokens_BP, s), jax.device_put(mask_BP, s)
