"""The shipped configs (ml_collections), also reachable as the repository's `configs/`.

`load("r1zero:model=DIR")` or `load("path/to/my_config.py:arg")` returns a config, as
`--config=` does on the command line; `override(config, {"rl.beta": 0.0})` applies
`--config.KEY=VALUE`-style overrides, refusing unknown keys with the nearest valid ones.
"""

from __future__ import annotations

import difflib
import importlib.util
import os

import ml_collections

DIR = os.path.dirname(os.path.abspath(__file__))


def path_of(spec: str) -> str:
    """The file of a config spec ("r1zero", "r1zero.py", "configs/r1zero.py", a path), without
    its ":arg" part; shipped names resolve to this package's files."""
    file = spec.split(":", 1)[0]
    if os.path.isfile(file):
        return file
    name = os.path.basename(file)
    shipped = os.path.join(DIR, name if name.endswith(".py") else name + ".py")
    if os.path.isfile(shipped) and name not in ("__init__.py", "common.py"):
        return shipped
    known = sorted(f[:-3] for f in os.listdir(DIR) if f.endswith(".py") and f[0] != "_")
    known.remove("common")
    raise FileNotFoundError(f"--config={spec}: no such file, nor a shipped config {known}")


def resolve(spec: str) -> str:
    """The spec with its file resolved (what ml_collections' config flag loads)."""
    file, sep, arg = spec.partition(":")
    return path_of(file) + sep + arg


def load(spec: str) -> ml_collections.ConfigDict:
    file, _, arg = spec.partition(":")
    path = path_of(file)
    module_spec = importlib.util.spec_from_file_location("_r1jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def keys(config, prefix: str = "") -> list[str]:
    """Every overridable key of a config, dotted ("rl.beta", "rewards.format.weight", ...)."""
    out = []
    for k, v in config.items():
        name = prefix + k
        out.append(name)
        if isinstance(v, ml_collections.ConfigDict):
            out += keys(v, name + ".")
    return out


def check_key(config, key: str, where: str = "") -> None:
    """Raises a one-line KeyError naming `key` and the nearest valid keys if it does not exist."""
    valid = keys(config)
    if key in valid:
        return
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise KeyError(f"--config.{key}: no such key in {where or 'the config'}{hint}")


def override(config, changes: dict) -> ml_collections.ConfigDict:
    """Applies {"a.b": value} like --config.a.b=value (types are checked by ml_collections)."""
    for key, value in changes.items():
        check_key(config, key)
        *path, last = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[last] = value
    return config
