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


def assign_rows(lengths, row_len: int, *, first_fit: bool = False, packing: bool = True):
    """(row [n], offset [n], number of rows): where each item of `lengths` tokens goes.

    In order, a new row when the item does not fit the last one (next fit: SFT's order is kept);
    first_fit: longest first, each into the first row with room (first-fit decreasing: denser
    rows for long-tailed lengths, the RL learner's choice). packing=False: one item per row.
    Items are placed left to right, so within a row offsets grow with the order of placement.
    An item longer than row_len is an error naming it.
    """
    lengths = np.asarray(lengths, np.int64)
    row, offset = np.zeros(len(lengths), np.int64), np.zeros(len(lengths), np.int64)
    used: list[int] = []
    order = np.argsort(-lengths, kind="stable") if first_fit else range(len(lengths))
    for i in order:
        n = int(lengths[i])
        if n > row_len:
            raise ValueError(f"example {i}: {n} tokens, more than the row length {row_len}")
        if first_fit:
            r = next((r for r, u in enumerate(used) if u + n <= row_len), len(used))
        else:
            fits = used and packing and used[-1] + n <= row_len
            r = len(used) - 1 if fits else len(used)
        if r == len(used):
            used.append(0)
        row[i], offset[i] = r, used[r]
        used[r] += n
    return row, offset, len(used)


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
    for i, (_, c) in enumerate(examples):
        if not c:
            raise ValueError(f"example {i}: empty completion (nothing to train on)")
    lengths = [len(p) + len(c) for p, c in examples]
    row, offset, n_rows = assign_rows(lengths, row_len, packing=packing)
    shape = (n_rows, row_len)
    out = {k: np.zeros(shape, np.int32) for k in ("tokens", "segment_ids", "positions", "target")}
    out["tokens"][:] = pad_id
    for i, (p, c) in enumerate(examples):
        r, s, n = row[i], offset[i], lengths[i]
        out["tokens"][r, s : s + n] = list(p) + list(c)
        out["segment_ids"][r, s : s + n] = out["segment_ids"][r].max() + 1
        out["positions"][r, s : s + n] = np.arange(n)
        first = s + 1 if loss_on_prompt else s + len(p)
        out["target"][r, first : s + n] = 1
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
