"""Extension points named in configs: "package.module:attribute" strings resolved to objects.

Rewards (config.rewards.<label>.name) and policy losses (config.rl.policy_loss) accept such a
string for a user's own function, so adding one never means editing a stage.
"""

from __future__ import annotations

import importlib
from typing import Any


def load(path: str, what: str) -> Any:
    """The object at "package.module:attribute"; errors name `what` (e.g. "reward 'x'")."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{what}: {path!r} is not 'package.module:attribute'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{what}: cannot load {path!r}: {e}") from e
