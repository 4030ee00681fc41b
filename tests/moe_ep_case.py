"""A tiny DeepSeek-V3-style MoE and the three things tests/test_expert_parallel.py compares
between meshes: the forward logits, one GRPO update (loss, metrics and new parameters) and a
rollout (sampled tokens and log-probs). `run(mesh)` works in one process and in each process of
a multi-process job (tests/multihost_worker.py's "moe_ep" task): every process builds the same
inputs, puts its own rows on the mesh and gets every result back whole.

The model: 2 layers, the first dense, then 16 routed experts (top 4 of 4 groups limited to 2,
sigmoid affinities with a non-zero balancing bias, normalised gates times 2.5) and one shared
expert; dropless; float32.
"""

import functools

import jax
import numpy as np
import optax
from hf_utils import left_padded_batch

from r1jax import distributed, rollout, sampling, update
from r1jax import sharding as shd
from r1jax.models import moe
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig
from r1jax.rl import losses, objective

CFG = ModelConfig(
    64, 32, 2, 4, 4, 8, 48, "deepseek_v3", init_std=0.2, n_experts=16, n_experts_per_tok=4,
    moe_d_ff=16, n_shared_experts=1, first_k_dense=1, router="sigmoid", n_group=4, topk_group=2,
    norm_topk_prob=True, routed_scaling=2.5,
)  # fmt: skip
ROWS, MICRO, PROMPT, NEW = 16, 8, 4, 4  # update rows, rows per micro-batch, positions
PROMPTS, GROUP = 8, 2  # rollout: 8 prompts x 2 samples
# one decode chunk: one decode phase to compile
SAMPLING = sampling.SamplingConfig(max_new_tokens=8, temperature=1.0, chunk=8, eos_ids=(3,))


def params() -> dict:
    one = shd.make_mesh((("fsdp", 1),), jax.local_devices()[:1])  # on every process
    p = tfm.init_params(CFG, jax.random.PRNGKey(0), one)
    p["moe_layers"]["router_bias"] = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (1, 16))
    return jax.tree.map(np.asarray, p)


def rows() -> dict:
    rng = np.random.default_rng(0)
    tok, mask = left_padded_batch(rng, 64, [8, 5, 7, 8, 6, 8, 4, 7] * 2, PROMPT + NEW)
    out = {"tokens": tok, "attn": mask, "mask": mask[:, PROMPT:].astype(np.float32)}
    out["adv"] = rng.normal(size=ROWS).astype(np.float32)
    out["sampler_logp"] = np.zeros((ROWS, NEW), np.float32)
    rollout_experts = rng.normal(size=(ROWS, 1, PROMPT + NEW, 16))
    out["experts"] = np.argsort(rollout_experts, -1)[..., :4].astype(np.int32)
    return out


def prompts():
    return left_padded_batch(np.random.default_rng(1), 64, [5, 9, 16, 3, 12, 7, 16, 1], 16)


def _all_rows(local: np.ndarray) -> np.ndarray:
    """Every process's rows (equal counts, process order) from this process's."""
    return distributed.gather(local).reshape((-1, *local.shape[1:]))


PARTS = ("logits", "step", "sample")


def run(mesh, parts=PARTS) -> dict[str, np.ndarray]:
    """On `mesh`, as NumPy, the same on every process: logits; step: loss and the other metrics,
    param/<i> (the updated parameters' leaves); sample: sample_tokens, sample_logp,
    sample_length."""
    out = {}
    p_sh = tfm.param_shardings(CFG, mesh)
    place = lambda: jax.tree.map(distributed.from_host, params(), p_sh)  # noqa: E731
    r = {k: v[update.my_rows(mesh, ROWS)] for k, v in rows().items()}
    if "logits" in parts:
        out["logits"] = _logits(mesh, p_sh, place, r)
    if "step" in parts:
        out.update(_step(mesh, place, r))
    if "sample" in parts:
        out.update(_sample(mesh, place))
    return out


def _logits(mesh, p_sh, place, r):
    """Logits of the rows, jitted like the scorer (the mesh set for the MoE layers)."""
    tok_sh = shd.named_sharding(("batch", None), (ROWS, PROMPT + NEW), mesh)
    fwd = jax.jit(tfm.logits, static_argnums=3, in_shardings=(p_sh, tok_sh, tok_sh))
    fwd = shd.under_mesh(fwd, p_sh)
    shape = (ROWS, PROMPT + NEW)
    tok, attn = (distributed.global_array(r[k], tok_sh, shape) for k in ("tokens", "attn"))
    return distributed.fetch(fwd(place(), tok, attn, CFG))


def _step(mesh, place, r):
    """One GRPO update: SGD at lr 1 (new params = params - gradients), 2 micro-batches, the
    sequence-wise balance loss, routing replay off (the disagreement metric on) and the
    balancing hook after the step."""
    loss_fn = functools.partial(
        objective.grpo_loss, policy_loss=losses.policy_loss, loss_cfg={"beta": 0.0},
        router_aux_coef=0.1, cfg=CFG, prompt_len=PROMPT, temperature=1.0, vocab_chunk=64,
    )  # fmt: skip
    prepare = functools.partial(objective.token_weights, loss_type="grpo", max_len=NEW)
    opt = optax.sgd(1.0)
    state = update.init_state(place(), opt, mesh)
    batch, bs = update.put_batch(mesh, r, MICRO)
    step = update.make_train_step(
        loss_fn, opt, state_shardings=update.shardings_of(state), batch_shardings=bs,
        prepare=prepare, after_update=moe.balancing_hook(CFG, 1e-3),
    )  # fmt: skip
    state, metrics = step(state, batch)
    out = distributed.fetch(metrics)
    for i, leaf in enumerate(jax.tree.leaves(distributed.fetch(state["params"]))):
        out[f"param/{i}"] = leaf
    return out


def _sample(mesh, place):
    """PROMPTS x GROUP sampled completions (rollout.generate: the GRPO stage's call)."""
    tok, mask = prompts()
    mine = rollout.my_prompts(mesh, PROMPTS)
    got = rollout.generate(
        place(), CFG, SAMPLING, tok[mine], mask[mine], jax.random.key(7), mesh=mesh,
        num_prompts=PROMPTS, group_size=GROUP,
    )  # fmt: skip
    return {f"sample_{k}": _all_rows(got[k]) for k in ("tokens", "logp", "length")}
