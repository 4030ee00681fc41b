"""Sampling from a checkpoint: prompts in, completions out (launch/sample.py, configs/sample.py).

Each prompt is put into config.template, encoded as the tokenizer's own prompts (so greedy output
matches transformers' `generate` on the same text) and sampled config.sampling.num_samples times.
Prints the completions; writes WORKDIR/samples.jsonl (prompt, completion, token_ids, truncated).
"""

from __future__ import annotations

import jax

from r1jax import distributed, files, rollout
from r1jax import sharding as shd
from r1jax.data import templates
from r1jax.errors import ConfigError
from r1jax.models import store
from r1jax.tokenizer import load_tokenizer


def sample(params, cfg, tok, questions, template, s, *, num_samples, mesh, seed=0) -> list[dict]:
    """Rows {prompt, completion, token_ids, truncated}, prompt-major, for every question."""
    examples = [{"question": q} for q in questions]
    n = len(examples)
    n_pad = -(-n // distributed.process_count()) * distributed.process_count()
    examples += [examples[-1]] * (n_pad - n)  # whole prompts per process
    mine = rollout.my_prompts(mesh, n_pad, "config.prompts")
    texts, tokens, mask = rollout.encode_prompts(examples[mine], template, tok, 1 << 30)
    out = rollout.generate(
        params,
        cfg,
        s,
        tokens,
        mask,
        jax.random.key(seed),
        mesh=mesh,
        num_prompts=n_pad,
        group_size=num_samples,
    )
    comps = rollout.decode_completions(out, tok)
    rows = [
        {
            "prompt": texts[i // num_samples],
            "completion": comps[i],
            "token_ids": [int(t) for t in out["tokens"][i, : out["length"][i]]],
            "truncated": bool(out["truncated"][i]),
        }
        for i in range(len(comps))
    ]
    rows = [r for part in distributed.gather_objects(rows) for r in part]
    return rows[: n * num_samples]


def run(config, workdir) -> list[dict]:
    c = config
    if not c.prompts:
        raise ConfigError("config.prompts: give at least one prompt")
    mesh = shd.make_mesh(c.mesh)
    cfg, params, tok_dir = store.load_or_init(c.model, mesh, seed=c.seed)
    tok_dir = c.tokenizer.get("path") or tok_dir
    if not tok_dir:
        raise ConfigError(f"config.tokenizer.path: {c.model.init} has no tokenizer files")
    tok = load_tokenizer(tok_dir)
    rows = sample(
        params,
        cfg,
        tok,
        list(c.prompts),
        templates.get_template(c.template),
        rollout.sampling_config(c.sampling, tok),
        num_samples=c.sampling.num_samples,
        mesh=mesh,
        seed=c.seed,
    )
    if distributed.is_main():
        for row in rows:
            print(f"--- {row['prompt']!r}\n{row['completion']}")
        if workdir:
            files.write_jsonl(files.path(workdir) / "samples.jsonl", rows)
    return rows
