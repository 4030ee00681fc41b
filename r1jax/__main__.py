"""`python -m r1jax COMMAND --flags...`: every entry point in one place.

Commands: train, sft, distill, eval, rejection, reward_model, pipeline, sample (r1jax.cli);
convert, sweep, plan, plot (r1jax.tools, r1jax.plotting).
"""

import importlib
import sys

from r1jax import cli

# Imported only when used: the commands lock their workdir before anything imports JAX.
TOOLS = {
    "convert": ("r1jax.tools", "convert"),
    "sweep": ("r1jax.tools", "sweep"),
    "plan": ("r1jax.tools", "plan"),
    "plot": ("r1jax.plotting", "main"),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in {**cli.COMMANDS, **TOOLS}:
        names = ", ".join([*cli.COMMANDS, *TOOLS])
        raise SystemExit(f"usage: python -m r1jax COMMAND [--flags]; COMMAND is one of {names}")
    command, argv = sys.argv[1], [f"r1jax {sys.argv[1]}", *sys.argv[2:]]
    if command in TOOLS:
        module, fn = TOOLS[command]
        getattr(importlib.import_module(module), fn)(argv)
    else:
        cli.main(command, argv)


if __name__ == "__main__":
    main()
