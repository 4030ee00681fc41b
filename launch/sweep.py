"""Run a config's sweep: one training run per `add(...)` call of its `sweep(add)` function.

  python launch/sweep.py --config=configs/r1zero.py --workdir=/tmp/sweep [--dry_run]

Each run gets WORKDIR/<index>-<overrides> and the same --config.KEY=VALUE semantics. On a
cluster, replace the loop with your scheduler: each printed command is independent.
"""

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys


def runs(config_file: str) -> list[dict]:
    spec = importlib.util.spec_from_file_location("sweep_config", config_file.split(":")[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "sweep"):
        raise SystemExit(f"--config={config_file}: the file defines no sweep(add) function")
    out: list[dict] = []
    module.sweep(lambda **kw: out.append(kw))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--dry_run", action="store_true", help="print the commands only")
    a = p.parse_args(argv)
    train = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    for i, kw in enumerate(runs(a.config)):
        name = f"{i:02d}-" + ",".join(f"{k}={v}" for k, v in kw.items())
        cmd = [
            sys.executable,
            train,
            f"--config={a.config}",
            f"--workdir={os.path.join(a.workdir, name)}",
        ]
        cmd += [f"--config.{k}={v}" for k, v in kw.items()]
        print(shlex.join(cmd), flush=True)
        if not a.dry_run:
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
