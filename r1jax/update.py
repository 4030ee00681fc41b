"""The one update builder: a loss function in, a jitted, sharded, donated train step out.

Every trainer of r1jax (GRPO and its variants, SFT, logit distillation, the reward model) is a
loss function handed to `make_train_step`; its frozen models (reference policy, teacher) are
scored with `make_scorer`. The builder owns what must be the same everywhere:

  state     {params, opt_state, step} (+ `extra`: non-gradient state such as an MoE router's
            balancing bias, updated by `after_update` after the optimizer step), donated;
  batch     {name: [n_micro, micro, ...]}, rows split over the mesh's batch axes on the `micro`
            axis, built from each process's own rows (`put_batch`), so no row crosses hosts;
  exactness the loss of a micro-batch is its share of the whole batch's loss (normalisers come
            from `prepare`, which sees the whole batch), so summing micro-batch losses and
            gradients gives the full-batch loss and gradient exactly;
  guard     a non-finite loss or gradient skips the update (parameters and optimizer state
            unchanged) and is reported as `skipped`;
  metrics   loss functions return {name: (numerator, denominator)} (the convention of
            r1jax.rl.losses: names ending _max/_min reduce by max/min, `loss`-like totals are
            sums); they are reduced over micro-batches and finalised inside the jitted step.

Row layout (device-major): a process's rows are the concatenation of its devices' row blocks,
in mesh order; within a device, rows are split into micro-batches in order. The global batch is
therefore the same array at any process count for the same mesh, which is what makes a
2-process run equal a 1-process run.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax import distributed, optim
from r1jax import sharding as shd
from r1jax.data import DataIterator
from r1jax.errors import ConfigError
from r1jax.rl import losses

f32 = jnp.float32


# -- state ----------------------------------------------------------------------------------------


def init_state(params, optimizer, mesh, extra=None) -> dict:
    """{params, opt_state, step[, extra]}: every optimizer leaf that mirrors a parameter (Adam's
    moments) is created sharded like it; every other leaf (counters) replicated on the mesh."""
    rep = shd.replicated(mesh)
    abstract = jax.eval_shape(optimizer.init, params)
    opt_shardings = optax.tree_map_params(
        optimizer,
        lambda _, p: p.sharding,
        abstract,
        params,
        transform_non_params=lambda _: rep,
    )
    state = {
        "params": params,
        "opt_state": jax.jit(optimizer.init, out_shardings=opt_shardings)(params),
        "step": jax.device_put(jnp.zeros((), jnp.int32), rep),
    }
    if extra:
        state["extra"] = jax.tree.map(lambda a: jax.device_put(a, rep), extra)
    return state


def shardings_of(tree):
    return jax.tree.map(lambda a: a.sharding, tree)


# -- batches: process-local rows <-> global [n_micro, micro, ...] arrays -------------------------


def batch_shardings(mesh, shapes: dict) -> dict:
    """Shardings of a micro-batched batch: rows (axis 1) split over the batch axes."""
    return {
        k: shd.named_sharding((None, "batch") + (None,) * (len(s) - 2), s, mesh)
        for k, s in shapes.items()
    }


def _local_shards(mesh) -> tuple[int, int]:
    """(batch shards of the mesh, batch shards on this process's devices)."""
    d = shd.batch_divisor(mesh)
    return d, d * len(mesh.local_devices) // mesh.size


def micro_split(rows: dict[str, np.ndarray], micro: int, mesh) -> dict[str, np.ndarray]:
    """This process's rows [L, ...] -> its part [n_micro, L * micro / M, ...] of the global
    [n_micro, micro, ...] layout (device-major: see the module docstring)."""
    d, d_local = _local_shards(mesh)
    out = {}
    for k, a in rows.items():
        n = a.shape[0] * d // d_local  # the global row count M
        if micro <= 0 or n % micro or micro % d:
            raise ValueError(
                f"batch of {n} rows does not split into micro-batches of {micro} rows over the "
                f"mesh's {d} batch shards (each micro-batch needs a multiple of {d} rows)"
            )
        a = a.reshape((d_local, n // micro, micro // d) + a.shape[1:])
        out[k] = np.swapaxes(a, 0, 1).reshape((n // micro, d_local * micro // d) + a.shape[3:])
    return out


def put_batch(mesh, rows: dict[str, np.ndarray], micro: int):
    """(global batch {k: [n_micro, micro, ...]}, its shardings) from this process's rows."""
    local = micro_split(rows, micro, mesh)
    d, d_local = _local_shards(mesh)
    shapes = {k: (a.shape[0], a.shape[1] * d // d_local) + a.shape[2:] for k, a in local.items()}
    sh = batch_shardings(mesh, shapes)
    return {k: distributed.global_array(a, sh[k], shapes[k]) for k, a in local.items()}, sh


def unsplit(x: jax.Array) -> np.ndarray:
    """This process's rows [L, ...] of a global [n_micro, micro, ...] array (put_batch's
    inverse)."""
    mesh = x.sharding.mesh
    d, d_local = _local_shards(mesh)
    a = distributed.local_data(x, axis=1)
    n_micro, micro_local = a.shape[:2]
    a = a.reshape((n_micro, d_local, micro_local // d_local) + a.shape[2:])
    return np.swapaxes(a, 0, 1).reshape((n_micro * micro_local,) + a.shape[3:])


def check_batch(mesh, batch_size: int, micro_batch: int) -> None:
    """config.batch_size / config.micro_batch against the mesh, before anything is loaded: each
    micro-batch must split over the mesh's batch shards and the batch into micro-batches."""
    d = shd.batch_divisor(mesh)
    if micro_batch <= 0 or micro_batch % d:
        raise ConfigError(
            f"config.micro_batch: {micro_batch} rows do not split over the mesh's {d} batch "
            f"shards (mesh {dict(mesh.shape)}); use a multiple of {d}"
        )
    if batch_size % micro_batch:
        raise ConfigError(
            f"config.batch_size: {batch_size} rows do not split into micro-batches of "
            f"config.micro_batch={micro_batch}"
        )


def my_rows(mesh, n: int) -> slice:
    """The rows of an n-row batch that this process holds (device-major: one block)."""
    start, stop = distributed.local_range(shd.named_sharding(("batch",), (n,), mesh), (n,))
    return slice(start, stop)


class RowBatches:
    """Batches of `batch_size` rows drawn from a host-side table (packed SFT rows, preference
    pairs), shuffled, epoch after epoch, resumably (get_state / set_state); each process takes
    only its own rows of every batch."""

    def __init__(self, rows: dict[str, np.ndarray], batch_size: int, micro: int, mesh, seed=0):
        self.rows, self.micro, self.mesh = rows, micro, mesh
        n = len(next(iter(rows.values())))
        self.it = DataIterator(range(n), batch_size, seed=seed)
        self.mine = my_rows(mesh, batch_size)

    def next(self):
        idx = self.it.next_indices()[self.mine]
        return put_batch(self.mesh, {k: v[idx] for k, v in self.rows.items()}, self.micro)

    def get_state(self) -> dict:
        return self.it.get_state()

    def set_state(self, state: dict) -> None:
        self.it.set_state(state)


def put_table(mesh, rows: dict[str, np.ndarray], micro: int):
    """A whole host-side table (e.g. held-out rows, a multiple of `micro` rows) as one batch."""
    n = len(next(iter(rows.values())))
    mine = my_rows(mesh, n)
    return put_batch(mesh, {k: v[mine] for k, v in rows.items()}, micro)


# -- the builders -------------------------------------------------------------------------------


def _sums(stacked: dict) -> dict:
    """{name: (numerator, denominator)} summed over micro-batches (max/min for _max/_min)."""
    out = {}
    for k, (n, d) in stacked.items():
        n = n.max() if k.endswith("_max") else n.min() if k.endswith("_min") else n.sum()
        out[k] = (n, d.sum())
    return out


def ratios(sums: dict) -> dict:
    """Host-side values (in float64) of a scorer's {name: (numerator, denominator)} sums: the
    mean numerator / denominator (0 without a denominator), or the numerator itself for the
    *_max / *_min names."""
    out = {}
    for k, (n, d) in distributed.fetch(sums).items():
        extreme = k.endswith(("_max", "_min"))
        out[k] = float(n) if extreme else float(n) / float(d) if float(d) else 0.0
    return out


def _unless_empty(fn: Callable, mb: dict, key: str | None):
    """fn(mb), or, when mb[key] is all zero, its identity for accumulation without computing it:
    zeros, except -inf / +inf for the numerators of *_max / *_min metrics."""
    if key is None:
        return fn(mb)

    def identity(mb):
        out = jax.eval_shape(fn, mb)
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), out)
        if isinstance(zeros, tuple) and isinstance(zeros[0], dict):  # (metrics, grads)
            return _extremes(zeros[0]), zeros[1]
        return _extremes(zeros) if isinstance(zeros, dict) else zeros

    return jax.lax.cond(jnp.any(mb[key] != 0), fn, identity, mb)


def _extremes(metrics: dict) -> dict:
    out = dict(metrics)
    for k, v in metrics.items():
        if isinstance(v, tuple) and k.endswith(("_max", "_min")):
            out[k] = (jnp.full_like(v[0], -jnp.inf if k.endswith("_max") else jnp.inf), v[1])
    return out


def make_train_step(
    loss_fn: Callable,
    optimizer,
    *,
    state_shardings,
    batch_shardings,
    frozen_shardings=(),
    prepare: Callable | None = None,
    after_update: Callable | None = None,
    skip_empty: str | None = None,
):
    """Jitted fn(state, batch, *frozen) -> (state, metrics); `state` is donated.

    loss_fn(params, micro_batch, ctx, *frozen) -> (loss, {name: (num, den)}): the micro-batch's
      share of the batch loss. frozen: models read but not trained (a teacher), not donated.
    prepare(batch) -> (batch, ctx): runs once on the whole batch before the micro-batch scan
      (global normalisers: token counts, per-token weights); default: (batch, {}). ctx's
      scalars are reported with the metrics (e.g. `tokens`).
    after_update(state, metrics) -> state: non-gradient state after the optimizer step.
    metrics: the loss function's (finalised), `loss`, `grad_norm`, `skipped`.
    skip_empty: a batch key; a micro-batch whose `batch[skip_empty]` is all zero (rows that only
      pad the micro-batch count up to a compiled bucket) is not computed (lax.cond).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch, *frozen):
        params = state["params"]
        batch, ctx = prepare(batch) if prepare is not None else (batch, {})

        def accumulate(grads, mb):
            def compute(mb):
                (loss, metrics), g = grad_fn(params, mb, ctx, *frozen)
                return {"loss": (loss, jnp.ones((), f32)), **metrics}, g

            metrics, g = _unless_empty(compute, mb, skip_empty)
            return jax.tree.map(jnp.add, grads, g), metrics

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, f32), params)
        grads, metrics = jax.lax.scan(accumulate, zeros, batch)
        # *_per_expert metrics (an MoE's loads [L,E]) are summed over micro-batches only and go
        # to after_update, not to the caller.
        vectors = {k: metrics.pop(k)[0].sum(0) for k in list(metrics) if k.endswith("_per_expert")}
        metrics = losses.finalize_metrics(metrics)
        new_state, m = optim.apply_if_finite(state, grads, metrics["loss"], optimizer)
        if "extra" in state:
            new_state["extra"] = state["extra"]
        metrics = {**metrics, **m, **ctx}
        if after_update is not None:
            new_state = after_update(new_state, {**metrics, **vectors})
        return new_state, metrics

    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings, *frozen_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
    return shd.under_mesh(jitted, state_shardings)  # expert-parallel MoE; splash on a TPU mesh


def make_scorer(
    fn: Callable,
    *,
    param_shardings,
    batch_shardings,
    arg_shardings=(),
    rows: bool = True,
    out_shardings=None,
    skip_empty: str | None = None,
):
    """Jitted fn(params, batch, *args) of a frozen model over micro-batches, no gradient.

    fn(params, micro_batch, *args) -> per-row values [micro, ...] (rows=True: stacked back into
    [n_micro, micro, ...], split like the batch; `out_shardings` if not the batch's `mask`
    sharding) or {name: (num, den)} (rows=False: summed over the batch; `ratios` divides).
    GRPO scores its reference and old policy with it; distillation its teacher.
    skip_empty: as in make_train_step (an empty micro-batch's rows score 0).
    """

    def score(params, batch, *args):
        def one(_, mb):
            return None, _unless_empty(lambda mb: fn(params, mb, *args), mb, skip_empty)

        out = jax.lax.scan(one, None, batch)[1]
        return out if rows else _sums(out)

    out = out_shardings or (batch_shardings["mask"] if rows else None)
    jitted = jax.jit(
        score,
        in_shardings=(param_shardings, batch_shardings, *arg_shardings),
        out_shardings=out,
    )
    return shd.under_mesh(jitted, param_shardings)  # expert-parallel MoE; splash on a TPU mesh
