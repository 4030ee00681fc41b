"""Reward-model data: preference pairs or labelled responses, read from JSONL and encoded.

Two schemas, one per training objective of r1jax.reward_model:
  pairwise   {"prompt", "chosen", "rejected"}   (R1's helpful RM: Bradley-Terry on pairs)
  pointwise  {"prompt", "response", "label"}    (R1's safety RM: label 1 = good/safe, 0 = not)
A row that breaks its schema fails with the file, line and field named.
"""

from __future__ import annotations

import os

import numpy as np

from r1jax.data.sources import DataError, _jsonl_rows

OBJECTIVES = ("pairwise", "pointwise")
_TEXT_FIELDS = {"pairwise": ("prompt", "chosen", "rejected"), "pointwise": ("prompt", "response")}


def encode_text(tokenizer, prompt: str, response: str, max_len: int) -> tuple[list[int], bool]:
    """Ids of prompt (as the tokenizer encodes prompts) + response + EOS, keeping the last
    max_len; (ids, cut)."""
    ids = tokenizer.encode_prompt(prompt) + tokenizer.encode(response) + [tokenizer.eos_id]
    return ids[-max_len:], len(ids) > max_len


def pad_right(rows: list[list[int]], pad_id: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, 1
    return tokens, mask


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"config.objective={objective!r}: expected one of {OBJECTIVES}")
    return objective


def load_rows(source: str, objective: str = "pairwise") -> list[dict]:
    """Rows of `objective`'s schema from "jsonl:PATH" (or a plain path)."""
    check_objective(objective)
    path = source[len("jsonl:") :] if source.startswith("jsonl:") else source
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.data.name={source!r}: no such file")
    out = []
    for where, row in _jsonl_rows(path):
        if not isinstance(row, dict):
            raise DataError(f"{where}: not a JSON object ({objective} schema)")
        for k in _TEXT_FIELDS[objective]:
            if not isinstance(row.get(k), str):
                raise DataError(f"{where}: field {k!r}: missing or not a string ({objective})")
        if objective == "pointwise":
            label = row.get("label")
            if isinstance(label, bool):
                label = int(label)
            if label not in (0, 1):
                raise DataError(f"{where}: field 'label': {row.get('label')!r} is not 0/1/bool")
            row = {**row, "label": label}
        out.append(row)
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def encode_rows(rows: list[dict], tokenizer, max_len: int, objective: str) -> tuple[dict, int]:
    """Right-padded [n, max_len] arrays, `valid` [n] (and `label` [n]); and #truncated texts.

    pairwise: chosen_tokens / chosen_mask / rejected_tokens / rejected_mask;
    pointwise: tokens / mask / label.
    """
    sides = {"pairwise": ("chosen", "rejected"), "pointwise": ("response",)}[objective]
    out, cut = {}, 0
    for side in sides:
        enc = [encode_text(tokenizer, r["prompt"], r[side], max_len) for r in rows]
        cut += sum(c for _, c in enc)
        prefix = "" if objective == "pointwise" else f"{side}_"
        out[f"{prefix}tokens"], out[f"{prefix}mask"] = pad_right(
            [ids for ids, _ in enc], tokenizer.pad_id, max_len
        )
    if objective == "pointwise":
        out["label"] = np.asarray([r["label"] for r in rows], np.float32)
    out["valid"] = np.ones(len(rows), np.float32)
    return out, cut
