"""A deterministic, resumable batch iterator over any `Sequence[dict]` of examples.

Epoch `e` visits the examples in the order of a pseudo-random permutation keyed by (seed, e).
The permutation is computed index by index (a Feistel network with cycle walking), so it costs
O(1) memory and works the same for a 10-row file and a 2**31-row procedural train split. The
whole iterator state is `{"seed", "epoch", "position", "num_examples"}`: plain JSON, saved with
a checkpoint; restoring it and continuing yields exactly what an uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence

from r1jax.data.tasks import stable_hash

_MASK64 = (1 << 64) - 1
_ROUNDS = 6


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a fast, well-mixed 64-bit hash of an integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


class IndexPermutation:
    """A keyed bijection of range(n), evaluated per index: `perm[i]` for 0 <= i < n."""

    def __init__(self, n: int, *key: object):
        if n < 1:
            raise ValueError(f"cannot permute {n} elements")
        self.n = n
        self.half_bits = max(1, ((n - 1).bit_length() + 1) // 2)  # Domain 4**half_bits >= n.
        self.round_keys = [stable_hash("perm", *key, r) for r in range(_ROUNDS)]

    def _feistel(self, x: int) -> int:
        mask = (1 << self.half_bits) - 1
        left, right = x >> self.half_bits, x & mask
        for k in self.round_keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        return (left << self.half_bits) | right

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        # Cycle walking: the Feistel network permutes a power-of-4 domain; re-apply it until the
        # value lands in range(n). This stays a bijection of range(n), about <=4 steps on average.
        x = self._feistel(i)
        while x >= self.n:
            x = self._feistel(x)
        return x

    def __len__(self) -> int:
        return self.n


class DataIterator:
    """Yields lists of `batch_size` example dicts; batches run on across epoch boundaries.

    With `num_epochs` set, iteration stops after that many passes and the last batch may be
    short (what evaluation wants). `shuffle=False` visits indices in order every epoch.
    """

    def __init__(
        self,
        source: Sequence[dict],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(source) == 0:
            raise ValueError("cannot iterate over an empty source")
        self.source, self.batch_size = source, batch_size
        self.shuffle, self.num_epochs = shuffle, num_epochs
        self.seed, self.epoch, self.position = int(seed), 0, 0
        self._perm: IndexPermutation | None = None
        self._perm_key: tuple[int, int] | None = None

    def _index(self) -> int:
        if not self.shuffle:
            return self.position
        if self._perm_key != (self.seed, self.epoch):
            self._perm_key = (self.seed, self.epoch)
            self._perm = IndexPermutation(len(self.source), self.seed, self.epoch)
        return self._perm[self.position]

    def __iter__(self) -> DataIterator:
        return self

    def next_indices(self) -> list[int]:
        """The source indices of the next batch (advances the position)."""
        out = []
        while len(out) < self.batch_size:
            if self.num_epochs is not None and self.epoch >= self.num_epochs:
                break
            out.append(self._index())
            self.position += 1
            if self.position == len(self.source):
                self.epoch, self.position = self.epoch + 1, 0
        if not out:
            raise StopIteration
        return out

    def __next__(self) -> list[dict]:
        return [dict(self.source[i]) for i in self.next_indices()]  # copies: callers may mutate

    def next_part(self, start: int, stop: int) -> list[dict]:
        """Examples [start, stop) of the next batch, reading only those (the rows of one
        process in a multi-host job; every process advances by the whole batch)."""
        return [dict(self.source[i]) for i in self.next_indices()[start:stop]]

    def get_state(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_examples": len(self.source),
        }

    def set_state(self, state: dict) -> None:
        missing = {"seed", "epoch", "position", "num_examples"} - set(state)
        if missing:
            raise ValueError(f"iterator state is missing {sorted(missing)}: {state}")
        if state["num_examples"] != len(self.source):
            raise ValueError(
                f"iterator state is for {state['num_examples']} examples but the source has "
                f"{len(self.source)}; the dataset changed since the checkpoint"
            )
        if not 0 <= state["position"] < len(self.source) or state["epoch"] < 0:
            raise ValueError(f"iterator state out of range: {state}")
        self.seed, self.epoch, self.position = (
            int(state["seed"]),
            int(state["epoch"]),
            int(state["position"]),
        )
