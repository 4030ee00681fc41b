"""Packing (prompt, completion) examples into fixed-length rows, and the SFT example sources.

Packing puts several examples in one row; `segment_ids` (1, 2, ... per example, 0 for padding)
keep attention inside an example and positions restart at 0 for each, so a packed row computes
exactly what the examples would compute alone (r1jax.models.transformer.attention_mask).
`targets`, `count_targets` and `nll_terms` read such rows for the SFT and distillation losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from r1jax.data import embedded, sources
from r1jax.models import transformer as tfm


def pack(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    row_len: int,
    *,
    pad_id: int = 0,
    loss_on_prompt: bool = False,
    packing: bool = True,
) -> dict[str, np.ndarray]:
    """Packs (prompt_ids, completion_ids) examples into rows of `row_len` tokens, in order.

    Returns int32 arrays [R, row_len]: tokens, segment_ids, positions, and `target` (1 where the
    token is trained on: a completion token, or any token but a segment's first with
    loss_on_prompt). Examples longer than row_len are an error naming the example.
    """
    rows: list[list[tuple[int, list[int], list[int]]]] = [[]]
    used = 0
    for i, (p, c) in enumerate(examples):
        if not c:
            raise ValueError(f"example {i}: empty completion (nothing to train on)")
        n = len(p) + len(c)
        if n > row_len:
            raise ValueError(f"example {i}: {n} tokens, more than the row length {row_len}")
        if rows[-1] and (not packing or used + n > row_len):
            rows.append([])
            used = 0
        rows[-1].append((i, list(p), list(c)))
        used += n
    shape = (len(rows), row_len)
    out = {k: np.zeros(shape, np.int32) for k in ("tokens", "segment_ids", "positions", "target")}
    out["tokens"][:] = pad_id
    for r, row in enumerate(rows):
        s = 0
        for seg, (_, p, c) in enumerate(row, start=1):
            n = len(p) + len(c)
            out["tokens"][r, s : s + n] = p + c
            out["segment_ids"][r, s : s + n] = seg
            out["positions"][r, s : s + n] = np.arange(n)
            first = s + 1 if loss_on_prompt else s + len(p)
            out["target"][r, first : s + n] = 1
            s += n
    return out


def targets(batch):
    """Next-token positions that count: a target token inside the same segment."""
    same = batch["segment_ids"][..., 1:] == batch["segment_ids"][..., :-1]
    return (batch["target"][..., 1:] > 0) & same


def count_targets(batch):
    """`prepare`: the number of target tokens of the whole batch (the loss normaliser)."""
    return batch, {"tokens": jnp.maximum(targets(batch).sum(), 1).astype(jnp.float32)}


def nll_terms(params, mb, *, cfg, vocab_chunk):
    """(log-probs of each next token [n, S-1], target mask [n, S-1]) for one micro-batch."""
    args = (mb["tokens"], mb["positions"], mb["segment_ids"])
    logp, _ = tfm.target_logprobs(params, *args, cfg, first=1, vocab_chunk=vocab_chunk)
    return logp, targets(mb)


def load_examples(dcfg) -> list[tuple[str, str]]:
    """(prompt, completion) text pairs from a config's data section: name "embedded" (the
    embedded base model's synthetic corpus: data.num_examples documents, data.kwargs seed and
    slip) or "jsonl:PATH" rows with `prompt` and `completion` fields (the "sft" schema)."""
    name = dcfg.name
    if name == "embedded":
        kw = dict(dcfg.get("kwargs", {}) or {})
        return embedded.corpus(dcfg.num_examples, seed=kw.get("seed", 0), slip=kw.get("slip", 0.4))
    if name.startswith("jsonl:"):
        rows = sources.read_file(name[len("jsonl:") :], schema="sft")
        rows = rows[: dcfg.num_examples] if dcfg.get("num_examples", 0) else rows
        return [(r["prompt"], r["completion"]) for r in rows]
    raise ValueError(f"config.data.name={name!r}: expected 'embedded' or 'jsonl:PATH'")


def pad_rows(rows: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Appends all-zero rows (no targets) so the row count is a multiple of `multiple`."""
    pad = -len(next(iter(rows.values()))) % multiple
    return {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for k, v in rows.items()}


def encode_examples(texts, tok) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids + EOS): the prompt encoded as the tokenizer's own prompts."""
    return [(tok.encode_prompt(p), tok.encode(c) + [tok.eos_id]) for p, c in texts]
