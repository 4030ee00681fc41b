"""From questions to scored completions, one place for every stage: prompt encoding, sampling
settings from a config's `sampling` section, the group sampler run as one global program over
the mesh, completion decoding, and the reward stack from a config's `rewards` section.

Multi-host: a batch of prompts is split over the processes by whole prompts (so a prompt's G
samples, its group, never straddle hosts). Each process encodes only its own prompts, the
sampler runs over the global arrays (the same key gives the same tokens at any process count:
random bits do not depend on the sharding), and each process gets back only its own rows.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np

from r1jax import continuous, distributed, sampling
from r1jax import sharding as shd
from r1jax.errors import ConfigError
from r1jax.rewards import RewardPool, RewardStack


def check_sampling(section, where: str = "config.sampling") -> None:
    """Decoding settings as one-line errors naming the field (SamplingConfig's own checks do
    not know the field's name, and NaN passes a comparison)."""
    rules = {
        "temperature": (lambda v: v >= 0, "a finite number >= 0 (0: greedy)"),
        "top_p": (lambda v: 0 < v <= 1, "a finite number in (0, 1]"),
        "top_k": (lambda v: v >= 0 and v == int(v), "an integer >= 0 (0: no top-k)"),
        "max_new_tokens": (lambda v: v >= 1 and v == int(v), "an integer >= 1"),
        "chunk": (lambda v: v >= 1 and v == int(v), "an integer >= 1"),
        "prefill_chunk": (lambda v: v >= 0 and v == int(v), "an integer >= 0 (0: whole prompt)"),
        "prefill_group": (lambda v: v >= 0 and v == int(v), "an integer >= 0 (0: all up front)"),
    }
    for name, (ok, rule) in rules.items():
        v = section.get(name, 1)
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (number and math.isfinite(v) and ok(v)):
            raise ConfigError(f"{where}.{name}={v!r}: must be {rule}")


def sampling_config(section, tok, **override) -> sampling.SamplingConfig:
    """SamplingConfig from a `sampling` section (configs/common.sampling) and the tokenizer
    (end and pad ids, stop strings as ids); `override` replaces section fields."""
    s = {**dict(section), **override}
    check_sampling(s)
    greedy = bool(s.get("greedy", False))
    return sampling.SamplingConfig(
        max_new_tokens=int(s["max_new_tokens"]),
        temperature=0.0 if greedy else float(s["temperature"]),
        top_p=1.0 if greedy else float(s["top_p"]),
        top_k=0 if greedy else int(s["top_k"]),
        chunk=int(s["chunk"]),
        eos_ids=tuple(tok.eos_ids),
        stop_sequences=tuple(tuple(tok.encode(t)) for t in s.get("stop", ())),
        pad_id=tok.pad_id,
        decoder=str(s.get("decoder", "static")),
        slots=int(s.get("slots", 0)),
        kv_dtype=str(s.get("kv_dtype", "auto")),
        prefill_chunk=int(s.get("prefill_chunk", 0)),
        prefill_group=int(s.get("prefill_group", 0)),
    )


def reward_stack(config) -> RewardStack:
    """The weighted reward functions of config.rewards (label -> {name, weight, kwargs}), in
    config.reward_pool's worker processes."""
    specs = [
        dict(name=r.name, weight=r.weight, kwargs=dict(r.get("kwargs", {}) or {}), label=label)
        for label, r in config.rewards.items()
    ]
    pool_cfg = config.reward_pool
    pool = RewardPool(workers=pool_cfg.workers, timeout_s=pool_cfg.timeout_s)
    return RewardStack(specs, correctness=config.get("correctness", "auto"), pool=pool)


def encode_prompts(examples, template, tok, max_prompt_len: int, length: int | None = None):
    """Prompt texts, and token ids left-padded to `length` (default: the bucket of the longest
    prompt of every host, at most max_prompt_len). Ids are the tokenizer's prompt encoding
    (special tokens as transformers adds them)."""
    texts = [template(ex) for ex in examples]
    ids = [tok.encode_prompt(t) for t in texts]
    longest = max(len(i) for i in ids)
    if longest > max_prompt_len:
        bad = next(ex for ex, i in zip(examples, ids) if len(i) == longest)
        raise ValueError(
            f"example {bad.get('id')!r}: prompt has {longest} tokens, more than "
            f"config.sampling.max_prompt_len={max_prompt_len}"
        )
    longest = int(distributed.gather(np.int64(longest)).max())  # hosts agree on one length
    length = length or min(sampling.bucket(longest), max_prompt_len)
    tokens, mask = sampling.pad_prompts(ids, tok.pad_id, length)
    return texts, tokens, mask


def decode_completions(out: dict, tok) -> list[str]:
    """Completion texts without the ending EOS token."""
    texts = []
    eos = set(tok.eos_ids)
    for toks, n in zip(out["tokens"], out["length"]):
        toks = [int(t) for t in toks[:n]]
        if toks and toks[-1] in eos:
            toks = toks[:-1]
        texts.append(tok.decode(toks))
    return texts


def reward_fields(examples, group_size: int, out: dict) -> dict[str, list]:
    """Per-completion columns for the reward functions: every example field, repeated G times,
    plus completion_lens (tokens) and truncated."""
    keys = sorted({k for ex in examples for k in ex})
    fields = {k: [ex.get(k) for ex in examples for _ in range(group_size)] for k in keys}
    fields["completion_lens"] = [int(n) for n in out["length"]]
    fields["truncated"] = [bool(t) for t in out["truncated"]]
    return fields


# -- prompts split over processes; the sampler over global arrays --------------------------------


def prompt_sharding(mesh, num_prompts: int, length: int):
    return shd.named_sharding(("batch", None), (num_prompts, length), mesh)


def my_prompts(mesh, num_prompts: int, what: str = "config.sampling.num_prompts") -> slice:
    """The prompts of a batch of `num_prompts` that this process encodes and scores."""
    n = distributed.process_count()
    if num_prompts % n:
        raise ConfigError(
            f"{what}={num_prompts} prompts do not split over {n} processes (whole prompt groups "
            "per host): use a multiple of the process count"
        )
    start, stop = distributed.local_range(prompt_sharding(mesh, num_prompts, 1), (num_prompts, 1))
    if stop - start != num_prompts // n:
        raise ConfigError(
            f"{what}={num_prompts}: the mesh {dict(mesh.shape)} does not split the prompts "
            f"evenly over the {n} processes; use a multiple of the data axis size"
        )
    return slice(start, stop)


def row_shardings(mesh, n_rows: int, new_tokens: int) -> dict:
    two = shd.named_sharding(("batch", None), (n_rows, new_tokens), mesh)
    one = shd.named_sharding(("batch",), (n_rows,), mesh)
    return {"tokens": two, "logp": two, "mask": two, "length": one, "truncated": one}


@functools.lru_cache(maxsize=32)
def _sampler(cfg, s, group_size: int, out_shardings):
    decode = continuous.generate if s.decoder == "continuous" else sampling.generate

    def run(params, tokens, mask, key_data):
        key = jax.random.wrap_key_data(key_data)
        return decode(params, tokens, mask, key, cfg=cfg, s=s, group_size=group_size)

    # Traced under the mesh for expert-parallel MoE and splash on a TPU mesh (sharding.under_mesh)
    return shd.under_mesh(jax.jit(run, out_shardings=dict(out_shardings)), out_shardings)


def host_key(key) -> np.ndarray:
    """A PRNG key as host data (raw uint32 words): what a multi-process jit may take as input."""
    return np.asarray(jax.random.key_data(key))


def generate(params, cfg, s, tokens_BP, mask_BP, key, *, mesh, num_prompts: int, group_size: int):
    """Samples `group_size` completions for this process's prompts `tokens_BP` (its slice of a
    global batch of `num_prompts`) and returns this process's rows as NumPy (prompt-major, like
    sampling.generate's output)."""
    P = tokens_BP.shape[1]
    sh = prompt_sharding(mesh, num_prompts, P)
    tokens = distributed.global_array(tokens_BP, sh, (num_prompts, P))
    mask = distributed.global_array(mask_BP, sh, (num_prompts, P))
    rows = row_shardings(mesh, num_prompts * group_size, s.max_new_tokens)
    key_data = host_key(key)
    out = _sampler(cfg, s, group_size, tuple(sorted(rows.items())))(params, tokens, mask, key_data)
    return {k: distributed.local_data(v) for k, v in out.items()}
