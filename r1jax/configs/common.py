"""The one config dialect: builders shared by every config file, so a key means one thing
everywhere (model.init, sampling.temperature, rewards.<label>.weight, optim.lr, ...).

Every field is declared (dict keys included, `None`-valued ones with their type), so every field
can be overridden from the command line:
  --config.optim.lr=1e-6  --config.mesh="(('fsdp',4),('tensor',2))"
  --config.rewards.format.weight=0.5  --config.model.overrides.dtype=bfloat16
and a mistyped key is an error naming the nearest valid ones (r1jax.cli).
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

from r1jax.models.config import ModelConfig

EMBEDDED = "embedded"


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'model=X,k=4,greedy' -> ConfigDict(model='X', k=4, greedy=True): values are parsed to
    the type of their default (int, float, bool, str); a bare name sets a bool to True."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"--config argument {key!r} is unknown; known: {sorted(defaults)}")
        kind = type(defaults[key])
        if kind is bool:
            if eq and value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--config argument {key}={value!r}: expected true or false")
            out[key] = not eq or value.lower() in ("true", "1")
        elif not eq:
            raise ValueError(f"--config argument {key!r} needs a value ({key}=...)")
        else:
            try:
                out[key] = kind(value)
            except ValueError:
                raise ValueError(
                    f"--config argument {key}={value!r}: expected {kind.__name__}"
                ) from None
    return ml_collections.ConfigDict(out)


def _field_type(annotation: str) -> type:
    for name, t in (("tuple", tuple), ("bool", bool), ("float", float), ("int", int)):
        if name in annotation:
            return t
    return str


MODEL_FIELDS = {f.name: _field_type(str(f.type)) for f in dataclasses.fields(ModelConfig)}


def model(init: str = EMBEDDED, preset: str = "tiny", **overrides) -> ml_collections.ConfigDict:
    """init: a model directory (r1jax or Hugging Face), "embedded" (the shipped base model) or ""
    (random weights of `preset`). overrides: ModelConfig fields (dtype, remat, d_model...); every
    field is declared, None meaning "the model's own value". cpu_fp32: on a CPU-only machine a
    bfloat16/float16 compute `dtype` computes in float32 (faster there, and what the tests
    compare); False keeps the low-precision dtype (bf16 numerics on CPU). Storage
    (`param_dtype`) is never changed."""
    unknown = sorted(set(overrides) - set(MODEL_FIELDS))
    if unknown:
        raise KeyError(
            f"model(): {unknown} are not ModelConfig fields; known: {list(MODEL_FIELDS)}"
        )
    ov = ml_collections.ConfigDict()
    for name, kind in MODEL_FIELDS.items():
        value = overrides.get(name)
        ov[name] = config_dict.placeholder(kind) if value is None else value
    return ml_collections.ConfigDict(dict(init=init, preset=preset, cpu_fp32=True, overrides=ov))


def tokenizer(path: str = "", **extra) -> dict:
    """path: a tokenizer directory; "" = the model directory's own."""
    return dict(path=path, **extra)


def data(name: str, **kw) -> dict:
    """A dataset (r1jax.data.load_dataset spec: a task name, gsm8k, math, jsonl:PATH, ...)."""
    base = dict(
        name=name,
        split="train",
        eval_split="test",
        template="r1zero",  # prompt template (r1jax.data.templates)
        template_kwargs={},
        kwargs={},  # task options (procedural tasks), e.g. test_size
        num_examples=0,  # 0 = all
        path="",  # local files of a named dataset
        data_dir="",  # a prepared TFDS directory
    )
    return {**base, **kw}


def sampling(**kw) -> dict:
    """How completions are drawn: num_prompts per batch x num_samples each (GRPO's B x G, the
    evaluation's k, rejection sampling's N), and the decoding settings."""
    base = dict(
        num_prompts=32,
        num_samples=16,
        max_new_tokens=1024,
        max_prompt_len=512,
        temperature=1.0,
        top_p=1.0,
        top_k=0,  # 0 = no top-k
        greedy=False,  # temperature 0 (and no top-p/top-k)
        chunk=32,  # decode steps between checks that every row has ended
        stop=(),  # stop strings, e.g. ("</answer>",)
        # static: all rows in lockstep until the last ends (fastest for short, even lengths);
        # continuous: `slots` rows at once, a finished row's slot refilled with the next
        # (faster for long-tailed lengths). Same completions for the same seed.
        decoder="static",
        slots=0,  # continuous decoder: rows decoded at once (0 = num_prompts * num_samples / 4)
        kv_dtype="auto",  # KV cache: auto (bf16 on accelerators, fp32 on CPU), float32, bfloat16
        # Prompt tokens per prefill forward (0 = whole prompt): each chunk attends to the KV of
        # those before it, so prefill activation memory is batch x prefill_chunk, not batch x
        # prompt length. Not for capacity-limited MoE models (capacity_factor > 0).
        prefill_chunk=0,
        # continuous decoder: prompts prefilled at a time inside the decode loop, when the rows
        # to be taken reach them (0 = all prompts before decoding starts)
        prefill_group=0,
    )
    unknown = sorted(set(kw) - set(base))
    if unknown:
        raise KeyError(f"sampling(): unknown keys {unknown}; known: {sorted(base)}")
    return {**base, **kw}


def rewards(**specs) -> dict:
    """label=(name, weight[, kwargs]) -> {label: {name, weight, kwargs}}: R1-Zero's rule reward
    is rewards(accuracy=("math", 1.0), format=("format", 1.0)). A registry name or
    "package.module:function" (r1jax.rewards.registry)."""
    out = {}
    for label, spec in specs.items():
        name, weight, kwargs = (*spec, {})[:3] if isinstance(spec, tuple) else (spec, 1.0, {})
        out[label] = dict(name=name, weight=float(weight), kwargs=dict(kwargs))
    return out


def reward_pool(workers: int = 0, timeout_s: float = 10.0) -> dict:
    """workers: reward worker processes, 0 = auto (min(CPUs, 8)); rule rewards always run in
    them, a hung or crashed item scoring 0, and only reward_model in this process (it holds a
    model). timeout_s: per item, hard (the worker is killed)."""
    return dict(workers=workers, timeout_s=timeout_s)


def optim(**overrides) -> dict:
    """AdamW with linear warmup, then a constant, cosine or linear schedule down to
    lr * min_lr_ratio; global-norm clipping. total_steps 0 means config.steps."""
    base = dict(
        lr=1e-5,
        warmup_steps=0,
        schedule="constant",  # constant | cosine | linear
        min_lr_ratio=0.0,
        weight_decay=0.0,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        grad_clip=1.0,  # 0 turns clipping off
        total_steps=0,
        # MoE with a sigmoid router (DeepSeek-V3): the balancing bias moves by this much per
        # step against each expert's load (auxiliary-loss-free balancing); 0 freezes it.
        router_bias_speed=1e-3,
    )
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"optim(): unknown keys {unknown}; known: {sorted(base)}")
    return {**base, **overrides}


def mesh(*axes: tuple[str, int]) -> tuple:
    """((axis, size), ...) over "data", "fsdp", "tensor"; -1 takes the remaining devices. With
    several processes and no "data" axis, the mesh is per host and "data" spans the hosts."""
    return tuple(tuple(a) for a in (axes or (("fsdp", -1),)))


def loop(steps: int, **kw) -> dict:
    """The keys r1jax.loop reads (top level of a training config)."""
    base = dict(
        steps=steps,
        log_every=1,
        ckpt_every=100,
        eval_every=0,  # 0 = no periodic evaluation
        samples_every=0,  # 0 = no samples.jsonl
        num_samples_logged=8,
        max_nonfinite_in_a_row=5,  # skipped (non-finite) updates in a row that stop the run
        keep_checkpoints=2,
        compilation_cache_dir="",  # a persistent XLA compilation cache ("" = none)
    )
    unknown = sorted(set(kw) - set(base))
    if unknown:
        raise KeyError(f"loop(): unknown keys {unknown}; known: {sorted(base)}")
    return {**base, **kw}


def base(seed: int = 0, mesh_axes: tuple | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = seed
    c.mesh = mesh(*(mesh_axes or ()))
    return c
