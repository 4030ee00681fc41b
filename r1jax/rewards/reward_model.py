"""A trained reward model as a GRPO reward function (registry name "reward_model").

  c.rewards.helpful = dict(name="reward_model", weight=1.0,
                           kwargs=dict(checkpoint="/path/rm", scope="summary"))
scope="summary" scores only the text after </think> (R1's helpful RM: "it scores the summary");
scope="full" the whole response, reasoning included (R1's safety RM). It holds a model, so the
reward pool runs it in the trainer's process (pool.IN_PROCESS), not in a worker that would load
its own copy. The pool calls it one item at a time (batch 1, one compilation per length bucket);
called directly on lists it scores `batch_size` rows at a time.
"""

from __future__ import annotations

import jax
import numpy as np

from r1jax import sampling
from r1jax import sharding as shd
from r1jax.data.preferences import encode_text, pad_right
from r1jax.models import reward_head, store
from r1jax.rewards.format import THINK_CLOSE, THINK_OPEN, with_prompt_prefix
from r1jax.tokenizer import load_tokenizer

SCOPES = ("summary", "full")
_scores = jax.jit(reward_head.scores, static_argnames=("cfg",))


def summary_text(prompt: str, completion: str) -> str:
    """What follows the think block (the R1 summary): "" if the block is never closed, the
    whole completion if it has no think tags. A `<think>` opened by the prompt counts."""
    text = with_prompt_prefix(prompt, completion)
    if THINK_CLOSE in text:
        return text.split(THINK_CLOSE, 1)[1]
    return "" if THINK_OPEN in text else completion


class RewardModelReward:
    """fn(prompts, completions, **fields) -> [r]: a trained reward model as a GRPO reward.

    checkpoint: a reward-model directory (the reward-model stage's WORKDIR/reward_model).
    scope: "summary" (text after </think>, R1's helpful RM) or "full" (the whole completion).
    max_len: tokens per scored sequence (longer ones keep their end); batch_size: rows per call
    of the model when given lists; mesh: ((axis, size), ...) to shard the model (default one
    device). The model is loaded on the first call, so building the function is cheap.
    """

    def __init__(
        self,
        *,
        checkpoint: str,
        scope: str = "summary",
        max_len: int = 4096,
        batch_size: int = 8,
        mesh: tuple | list | None = None,
    ):
        if scope not in SCOPES:
            raise ValueError(f"reward_model: scope must be one of {SCOPES}, got {scope!r}")
        if not reward_head.is_reward_model(checkpoint):
            raise FileNotFoundError(f"reward_model: {checkpoint!r} has no {reward_head.HEAD_FILE}")
        if max_len < 2 or batch_size < 1:
            raise ValueError(f"reward_model: bad max_len={max_len} / batch_size={batch_size}")
        self.path, self.scope = checkpoint, scope
        self.max_len, self.batch_size = max_len, batch_size
        self.mesh_shape = [tuple(a) for a in mesh] if mesh else None
        self._model = None

    def _load(self):
        if self._model is None:
            tok_dir = store.tokenizer_path(self.path)
            if tok_dir is None:
                raise FileNotFoundError(f"reward_model: {self.path} has no tokenizer")
            mesh = shd.make_mesh(self.mesh_shape) if self.mesh_shape else None
            cfg, params = reward_head.load(self.path, mesh)
            self._model = (cfg, params, load_tokenizer(tok_dir))
        return self._model

    def text(self, prompt: str, completion: str) -> str:
        """The part of the completion this reward model scores."""
        return summary_text(prompt, completion) if self.scope == "summary" else completion

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        cfg, params, tok = self._load()
        ids = [
            encode_text(tok, p, self.text(p, c), self.max_len)[0]
            for p, c in zip(prompts, completions, strict=True)
        ]
        out = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            real = len(chunk)
            if len(ids) > self.batch_size:  # one shape for all chunks: pad with copies
                chunk = chunk + [chunk[-1]] * (self.batch_size - real)
            length = min(sampling.bucket(max(map(len, chunk))), self.max_len)
            tokens, mask = pad_right(chunk, tok.pad_id, length)
            r = _scores(params, tokens, mask, cfg=cfg)
            out += [float(x) for x in np.asarray(r)[:real]]
        return out
