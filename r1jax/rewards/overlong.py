"""DAPO soft overlong punishment, measured in completion tokens (anchors_pytorch.md section b).

    R_len(y) = 0                                 if |y| <= L_max - L_cache
             = ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
             = -1                                if |y| > L_max

DAPO generates up to L_max tokens (16,384 + 4,096 = 20,480), so a truncated completion sits at
|y| = L_max and gets -1 from the middle branch. `penalty_factor` scales the result (verl's
`overlong_buffer.penalty_factor`). Uses the `completion_lens` field the trainer always passes.
"""

from __future__ import annotations


def soft_overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """DAPO's R_len for one completion of `length` tokens."""
    start = max_len - cache_len
    if length <= start:
        return 0.0
    if length <= max_len:
        return (start - length) / cache_len
    return -1.0


class OverlongPenalty:
    """Reward function: `penalty_factor * R_len(completion_lens[i])`."""

    def __init__(self, *, max_len: int, cache_len: int, penalty_factor: float = 1.0):
        if not 0 < cache_len <= max_len:
            raise ValueError(
                f"overlong: need 0 < cache_len <= max_len, got cache_len={cache_len}, "
                f"max_len={max_len}"
            )
        self.max_len, self.cache_len, self.penalty_factor = max_len, cache_len, penalty_factor

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        if "completion_lens" not in fields:
            raise ValueError("overlong penalty needs the per-item field 'completion_lens' (tokens)")
        return [
            self.penalty_factor * soft_overlong_penalty(int(n), self.max_len, self.cache_len)
            for n in fields["completion_lens"]
        ]
