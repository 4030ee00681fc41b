"""The command line: every entry point (launch/*.py, the r1jax-* console scripts) is
`main(command)` here, on absl flags with ml_collections configs.

  r1jax-train --config=r1zero --workdir=/tmp/r1zero --config.rl.beta=0
  python launch/train.py --config=configs/r1zero.py:model=DIR --workdir=gs://bucket/run

--config takes a file (configs/r1zero.py) or a shipped config by name (r1zero), with ":args";
--config.KEY=VALUE overrides any field (a mistyped key is a one-line error naming the nearest
valid ones); --dry_run prints the resolved config and checks it without running. A workdir is
locked (r1jax.files.WorkdirLock) for the run's lifetime, before JAX is imported. Several hosts:
--coordinator=HOST:PORT --num_processes=N --process_id=I, or nothing on a Cloud TPU pod, under
SLURM or Open MPI (r1jax.distributed); every process checks that all run the same code and
config before anything compiles.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys

from absl import flags
from ml_collections import config_flags

# Nothing imported here imports JAX: the workdir lock is taken before JAX starts (main); what
# needs JAX is imported by name after it (`_late`).
from r1jax import configs, files
from r1jax.data import DataError
from r1jax.errors import ConfigError, FileError, StateError, one_line

# command -> (module, its run function, its dry-run check or "", what it is)
COMMANDS = {
    "train": ("r1jax.stages.grpo", "run", "check", "GRPO: R1-Zero and the RL stages of R1"),
    "sft": ("r1jax.stages.sft", "run", "", "supervised fine-tuning / pretraining"),
    "distill": ("r1jax.stages.pipeline", "run_distillation", "", "distillation (traces or logits)"),
    "eval": ("r1jax.stages.evaluate", "run", "", "evaluation with R1's protocol"),
    "rejection": ("r1jax.stages.rejection", "run", "", "rejection sampling into SFT data"),
    "reward_model": ("r1jax.stages.reward_model", "run", "", "reward-model training"),
    "pipeline": ("r1jax.stages.pipeline", "run_pipeline", "", "the four-stage R1 pipeline"),
    "sample": ("r1jax.stages.sample", "run", "", "sample completions from a checkpoint"),
}


def define_flags(fv: flags.FlagValues, command: str, *, with_config=True, argv=None):
    if with_config:  # the config file is read at definition time, to define its --config.KEYs
        config_flags.DEFINE_config_file(
            "config",
            None,
            "a config file or shipped name, with :args",
            flag_values=fv,
            sys_argv=argv,
        )
        flags.DEFINE_string("workdir", None, "run directory (local or gs://)", flag_values=fv)
        flags.DEFINE_bool("dry_run", False, "print the resolved config and stop", flag_values=fv)
    flags.DEFINE_string("coordinator", "", "HOST:PORT of process 0 (multi-host)", flag_values=fv)
    flags.DEFINE_integer("num_processes", 0, "processes in the job (multi-host)", flag_values=fv)
    flags.DEFINE_integer("process_id", -1, "this process's index (multi-host)", flag_values=fv)
    flags.DEFINE_integer("init_timeout_s", 300, "seconds to wait for the others", flag_values=fv)


def _resolve_config_args(argv: list[str]) -> list[str]:
    """--config=NAME[:args] -> the shipped file; a file path stays as it is."""
    out = []
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            a = "--config=" + configs.resolve(a[len("--config=") :])
        elif i and argv[i - 1] == "--config":
            a = configs.resolve(a)
        out.append(a)
    return out


def parse(argv: list[str], command: str = "train", fv: flags.FlagValues | None = None):
    """(flag values) from a command line; errors are one line (SystemExit with the message)."""
    fv = fv or flags.FlagValues()
    try:
        argv = _resolve_config_args(list(argv))
    except FileNotFoundError as e:
        raise SystemExit(f"{argv[0] if argv else command}: {e}") from None
    try:
        define_flags(fv, command, argv=argv)
        fv(argv)
    except (KeyError, AttributeError) as e:  # an override of a key the config does not have
        raise SystemExit(_unknown_key(argv, e)) from None
    except flags.Error as e:
        raise SystemExit(f"{command}: {e}") from None
    if fv["config"].value is None:
        raise SystemExit(f"{command}: --config is required")
    if not (fv.dry_run or fv.workdir or command == "sample"):
        raise SystemExit(f"{command}: --workdir is required")
    return fv


def _unknown_key(argv, err) -> str:
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
    try:
        base = configs.load(spec)
    except Exception:  # noqa: BLE001 (the config itself fails: report the original error)
        return f"--config: {err}"
    for a in argv:
        if a.startswith("--config."):
            key = a[len("--config.") :].split("=", 1)[0]
            try:
                configs.check_key(base, key, configs.path_of(spec))
            except KeyError as e:
                return str(e.args[0])
    return f"--config: {err}"


def _late(module: str):
    """A module that imports JAX, imported only once the workdir is locked (main)."""
    return importlib.import_module(module)


def check_config(config, where: str = "config") -> None:
    """Checks every `optim` and `sampling` section of a config (a pipeline has one per stage),
    so a bad value is a one-line error naming its field before anything is loaded."""
    for key, value in config.items():
        if not hasattr(value, "items"):
            continue
        if key == "optim":
            steps = config.get("steps", 0) or 0
            _late("r1jax.optim").check_config(value, f"{where}.optim", steps=steps)
        elif key == "sampling":
            _late("r1jax.rollout").check_sampling(value, f"{where}.sampling")
        else:
            check_config(value, f"{where}.{key}")


def start(fv) -> None:
    """Joins the other processes (if any), then checks they run the same code and config."""
    jax, distributed = _late("jax"), _late("r1jax.distributed")
    distributed.initialize(
        fv.coordinator, fv.num_processes, fv.process_id, timeout_s=fv.init_timeout_s
    )
    distributed.check_same("the r1jax code", distributed.code_fingerprint())
    if "config" in fv and fv["config"].value is not None:
        c = fv["config"].value
        distributed.check_same("the resolved config", c.to_json_best_effort(sort_keys=True))
        cache = c.get("compilation_cache_dir", "")
        if cache:
            jax.config.update("jax_compilation_cache_dir", cache)


def _stage(command: str, check: bool = False):
    """The stage function behind `command` (its dry-run check if `check`; None if it has none)."""
    module, run_fn, check_fn, _ = COMMANDS[command]
    name = check_fn if check else run_fn
    return getattr(importlib.import_module(module), name) if name else None


def run(command: str, config, workdir):
    """Runs a command's stage; a run that fails before writing anything leaves no workdir."""
    distributed = _late("r1jax.distributed")
    if workdir is None:
        return _stage(command)(config, None)
    wd = files.path(workdir)
    existed = wd.exists()
    try:
        return _stage(command)(config, workdir)
    except BaseException:
        if not existed and distributed.is_main():
            files.remove_if_empty(wd)
        raise


def _report(command: str, result) -> None:
    if not _late("r1jax.distributed").is_main() or not isinstance(result, dict):
        return
    if command == "train":
        print({k: round(v, 4) for k, v in result.items() if k.startswith(("eval/", "train/acc"))})
    elif command in ("pipeline", "distill"):
        for name, s in result.items():
            print(f"{name:>16}: pass@1 {s['pass@1']:.3f}")
    elif command == "eval":
        print(
            {
                k: round(v, 4) if isinstance(v, float) else v
                for k, v in result.items()
                if k not in ("config", "model")
            }
        )
    elif command == "rejection":
        keys = (
            ("stopped", "batches")
            if result.get("stopped")
            else ("sampled", "kept", "dropped", "output")
        )
        print({k: result[k] for k in keys})


def _flag(argv: list[str], name: str) -> str | None:
    """The value of --name=V / --name V / --name (a bool: "true") in a raw command line."""
    value = None
    for i, a in enumerate(argv[1:], 1):
        bare = a.lstrip("-")
        if not a.startswith("-"):
            continue
        if bare.startswith(name + "="):
            value = bare.split("=", 1)[1]
        elif bare == name:
            value = argv[i + 1] if name == "workdir" and i + 1 < len(argv) else "true"
        elif bare == "no" + name:
            value = "false"
    return value


def _lock(argv: list[str]) -> files.WorkdirLock:
    """The workdir lock this command line asks for, read from the raw flags: parsing them loads
    the config file, which imports JAX."""
    dry = (_flag(argv, "dry_run") or "false").lower() in ("true", "1")
    pid = _flag(argv, "process_id")
    rank = files.launch_rank(int(pid) if pid and pid.lstrip("-").isdigit() else -1)
    return files.WorkdirLock(None if dry else _flag(argv, "workdir"), rank)


# What a user (or the machine) must fix, printed as one line: exit status 2 (the input), 1 (the
# run: a held workdir, non-finite updates, no usable checkpoint, a full or read-only disk).
CONFIG_ERRORS = (ConfigError, DataError, FileError, ConnectionError, FileNotFoundError)
RUN_ERRORS = (StateError, FloatingPointError)
IO_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


def io_error(e: BaseException) -> OSError | None:
    """The disk error (disk full, read-only, permission...) behind `e`, if any: libraries such as
    orbax re-raise it wrapped in their own exceptions."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in IO_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def describe_io_error(e: OSError) -> str:
    where = e.filename or "(path not given)"
    return f"{where}: {e.strerror or one_line(e)} ({errno.errorcode.get(e.errno, e.errno)})"


def main(command: str, argv: list[str] | None = None) -> None:
    """The entry point of `command` (see COMMANDS): lock, parse, start, run, report."""
    argv = list(sys.argv if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _lock(argv):
            _main(command, argv)
    except CONFIG_ERRORS as e:
        print(f"{command}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except RUN_ERRORS as e:
        print(f"{command}: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as e:
        if (disk := io_error(e)) is None:
            raise
        print(f"{command}: {describe_io_error(disk)}", file=sys.stderr)
        raise SystemExit(1) from None


def _main(command: str, argv: list[str]) -> None:
    try:
        fv = parse(argv, command, flags.FLAGS)
    except SystemExit as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None
    check_config(fv.config)
    start(fv)
    config = fv.config
    if fv.dry_run:  # everything that can be checked without loading or compiling
        if check := _stage(command, check=True):
            check(config)
        print(config)
        return
    _report(command, run(command, config, fv.workdir))


def entry(command: str):
    """A console-script function for `command`."""
    return lambda: main(command)


train, sft, distill, evaluate = entry("train"), entry("sft"), entry("distill"), entry("eval")
rejection, reward_model, pipeline = entry("rejection"), entry("reward_model"), entry("pipeline")
sample = entry("sample")
