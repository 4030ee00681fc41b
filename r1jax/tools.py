"""Command-line tools beside the stages: checkpoint conversion, sweeps and the memory plan
(launch/convert.py, launch/sweep.py, launch/plan.py; r1jax-convert, r1jax-sweep, r1jax-plan).
Same absl style and multi-host flags as r1jax.cli.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
import subprocess
import sys

from absl import flags

from r1jax import cli, configs, distributed
from r1jax import plan as plan_lib
from r1jax.errors import ConfigError
from r1jax.models import get_preset, hf, store


def _parse(define, argv, name: str):
    fv = flags.FLAGS
    cli.define_flags(fv, name, with_config=False)
    define(fv)
    try:
        fv(list(sys.argv if argv is None else argv))
    except flags.Error as e:
        raise SystemExit(f"{name}: {e}") from None
    return fv


def convert(argv=None) -> None:
    """HF <-> r1jax checkpoints: --src=DIR --dst=DIR [--to=hf] [--dtype=bfloat16]."""

    def define(fv):
        flags.DEFINE_string("src", None, "model directory (r1jax or HF)", flag_values=fv)
        flags.DEFINE_string("dst", None, "output directory", flag_values=fv)
        flags.DEFINE_enum("to", "r1jax", ["r1jax", "hf"], "output format", flag_values=fv)
        flags.DEFINE_string("dtype", "float32", "parameter dtype to store", flag_values=fv)
        flags.mark_flags_as_required(["src", "dst"], flag_values=fv)

    fv = _parse(define, argv, "convert")
    cli.start(fv)
    cfg, params = store.load_model(fv.src, None, param_dtype=fv.dtype)
    tok = store.tokenizer_path(fv.src)
    if fv.to == "hf":
        hf.save_hf(params, cfg, fv.dst, dtype=fv.dtype, tokenizer_dir=tok)
    else:
        store.save_model(fv.dst, params, cfg, tokenizer_dir=tok)
    if distributed.is_main():
        print(f"wrote {fv.to} checkpoint to {fv.dst}")


def sweep_runs(spec: str) -> list[dict]:
    """The overrides of every `add(...)` call of the config file's `sweep(add)`."""
    path = configs.path_of(spec)
    module_spec = importlib.util.spec_from_file_location("_r1jax_sweep", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "sweep"):
        raise SystemExit(f"--config={spec}: the file defines no sweep(add) function")
    out: list[dict] = []
    module.sweep(lambda **kw: out.append(kw))
    return out


def sweep_commands(spec: str, workdir: str, command: str = "train") -> list[list[str]]:
    """One independent command per sweep point: WORKDIR/<index>-<overrides>."""
    cmds = []
    for i, kw in enumerate(sweep_runs(spec)):
        name = f"{i:02d}-" + ",".join(f"{k}={v}" for k, v in kw.items())
        cmd = [sys.executable, "-m", "r1jax", command, f"--config={spec}"]
        cmd += [f"--workdir={os.path.join(workdir, name)}"]
        cmds.append(cmd + [f"--config.{k}={v}" for k, v in kw.items()])
    return cmds


def sweep(argv=None) -> None:
    """--config=FILE --workdir=DIR [--dry_run]: runs (or prints) every point of the sweep."""

    def define(fv):
        flags.DEFINE_string(
            "config", None, "config file (or shipped name) with sweep(add)", flag_values=fv
        )
        flags.DEFINE_string("workdir", None, "parent of the runs' directories", flag_values=fv)
        flags.DEFINE_bool("dry_run", False, "print the commands only", flag_values=fv)
        flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)

    fv = _parse(define, argv, "sweep")
    for cmd in sweep_commands(fv.config, fv.workdir):
        print(shlex.join(cmd), flush=True)
        if not fv.dry_run:
            subprocess.run(cmd, check=True)


def plan_report(
    config,
    targets,
    *,
    preset: str | None = None,
    max_new_tokens: int = 0,
    slots: int = -1,
    micro_batch: int = 0,
) -> str:
    """The memory table of `config` (a GRPO config; its model or a preset) on each target, with
    the mesh r1jax.plan recommends and why."""
    cfg = (
        get_preset(preset, remat=True, dtype="bfloat16")
        if preset
        else store.config_of(config.model)
    )
    settings = plan_lib.settings_of(config)
    if max_new_tokens:
        settings = dataclasses.replace(settings, max_new_tokens=max_new_tokens)
    if slots >= 0:
        settings = dataclasses.replace(settings, slots=slots)
    if micro_batch:
        settings = dataclasses.replace(settings, micro_batch=micro_batch)
    label = preset or config.model.init or config.model.preset
    plans, lines = [], []
    for t in targets:
        best, why = plan_lib.recommend(cfg, t, settings, label=label)
        plans.append(best)
        lines.append(f"{t}: {why}")
    head = (
        f"{label}: {settings.num_prompts} prompts x {settings.group_size} samples, "
        f"{settings.prompt_len} + {settings.max_new_tokens} tokens, micro-batch "
        f"{settings.micro_batch}, {settings.slots or 'no'} decode slots, attention "
        f"{cfg.attention}; GiB per device"
    )
    return "\n".join([head, plan_lib.format_table(plans), *lines])


def plan(argv=None) -> None:
    """--config=FILE --target=v5p-64 [--target=h100x8 ...]: memory per device and a mesh."""

    def define(fv):
        flags.DEFINE_string(
            "config", "r1zero:model=paper", "a GRPO config (file or name)", flag_values=fv
        )
        flags.DEFINE_multi_string("target", ["v5p-64", "h100x8"], "machines", flag_values=fv)
        flags.DEFINE_string("model", "", "a preset instead of the config's model", flag_values=fv)
        flags.DEFINE_integer("max_new_tokens", 0, "instead of the config's", flag_values=fv)
        flags.DEFINE_integer("micro_batch", 0, "instead of the config's", flag_values=fv)
        flags.DEFINE_integer(
            "slots",
            -1,
            "decode slots (continuous batching; 0 static; -1 the config's)",
            flag_values=fv,
        )

    fv = _parse(define, argv, "plan")
    c = configs.load(fv.config)
    try:
        report = plan_report(
            c, fv.target, preset=fv.model or None, max_new_tokens=fv.max_new_tokens,
            slots=fv.slots, micro_batch=fv.micro_batch,
        )  # fmt: skip
    except ConfigError as e:  # e.g. prompt + new tokens beyond the model's context
        raise SystemExit(f"plan: {e}") from None
    print(report)
