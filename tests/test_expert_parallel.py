"""Expert parallelism (r1jax/models/moe.py's "expert" mesh axis) against one device, on the tiny
DeepSeek-V3-style MoE of tests/moe_ep_case.py (16 experts, shared expert, dense first layer,
sigmoid router with a non-zero balancing bias, dropless, float32): the rollout sampler on an
expert mesh in this process, and the logits and a GRPO update in a 2-process job whose expert
axis spans both processes; the all_to_all dispatch against the gather form. The one-process
GRPO update on fsdp 2 x expert 4 is
tests/test_moe.py::test_expert_parallel_grpo_step_equals_single_device.

Time budget: the file costs ~85 s of CPU on the 2-core CI machine (user + sys, the 2-process
job's workers included; measured 83 s, and 4 min 49 s wall while 3 other jobs shared the
machine at load ~13), mostly compiling: the one-device reference (logits, update, rollout)
~21 s, the 2-process job 38 s, the rest the expert-mesh rollout and the dispatch forms.
"""

import numpy as np
import pytest
from moe_ep_case import run
from test_multihost import launch

from r1jax import sharding as shd
from r1jax.models import moe

TOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    return run(shd.make_mesh((("fsdp", 1),)))


def _traced_expert_axes(monkeypatch) -> list[int]:
    """The expert-axis size each traced MoE layer saw (the shard_map path when > 1)."""
    seen, traced = [], moe.expert_parallelism
    monkeypatch.setattr(moe, "expert_parallelism", lambda: seen.append(traced()) or seen[-1])
    return seen


def assert_same_samples(got, want):
    np.testing.assert_array_equal(got["sample_tokens"], want["sample_tokens"])
    np.testing.assert_array_equal(got["sample_length"], want["sample_length"])
    np.testing.assert_allclose(got["sample_logp"], want["sample_logp"], atol=TOL, rtol=0)
    # sampled (not greedy), some rows ended early at the EOS
    assert 1 < want["sample_length"].min() < want["sample_length"].max() == 8


def test_rollout_on_an_expert_mesh_equals_one_device(reference, monkeypatch):
    """rollout.generate (prefill and the decode loop) on fsdp 2 x expert 4 runs the experts
    sharded 4 ways (each device 4 of the 16, the tokens of its expert group gathered) and draws
    the same tokens with the same log-probs as one device, for the same key."""
    seen = _traced_expert_axes(monkeypatch)
    got = run(shd.make_mesh((("fsdp", 2), ("expert", 4))), parts=("sample",))
    assert seen and set(seen) == {4}
    assert_same_samples(got, reference)


def test_two_processes_with_the_expert_axis_across_them_equal_one_device(reference, tmp_path):
    """2 processes x 4 CPU devices (gloo), mesh expert 8: each device holds 2 of the 16
    experts and 1/8 of the rows, and every MoE layer's gather and reduce-scatter cross the
    processes. The logits and one GRPO update (loss, metrics, and every new parameter: SGD at
    lr 1 makes them params - gradients; the balancing bias included) equal one device within
    1e-5. Time: one 2-process job, 38 s of CPU (both processes; 61 s wall on the shared 2-core
    CI machine at load ~12)."""
    task = {"kind": "moe_ep", "workdir": str(tmp_path / "ep"), "parts": ["logits", "step"]}
    spec = {"tasks": [task | {"mesh": [["data", 1], ["expert", 8]]}]}
    launch(spec, tmp_path / "ep.json", processes=2, devices=4)
    got = dict(np.load(tmp_path / "ep" / "ep.npz"))
    assert set(got) == {k for k in reference if not k.startswith("sample_")}
    np.testing.assert_allclose(got["logits"], reference["logits"], atol=TOL, rtol=0)
    # Metrics: *_max are maxima over micro-batches, whose rows differ between meshes (each
    # batch shard splits its own rows into micro-batches); the sums do not.
    for k in [k for k in reference if not k.startswith(("param/", "sample_", "logits"))]:
        if not k.endswith("_max"):
            np.testing.assert_allclose(got[k], reference[k], rtol=TOL, atol=1e-7, err_msg=k)
    assert float(reference["grad_norm"]) > 0 and float(reference["routing_disagreement"]) > 0
    params = [k for k in reference if k.startswith("param/")]
    assert len(params) > 20
    for k in params:
        np.testing.assert_allclose(got[k], reference[k], atol=TOL, rtol=0, err_msg=k)


def test_all_to_all_dispatch_equals_the_gather_form():
    """cfg.expert_dispatch="all_to_all" on fsdp 2 x expert 4 (64 tokens, 16 per device, 4 of
    the 16 experts per device): dropless, the routed output and its gradients (tokens, gates,
    expert weights) equal the gather form's and one device's. With a capacity factor each
    device sends at most ceil(c * 16 * 4 / 4) assignments to each device; what does not fit is
    dropped, reported in `kept`, and the output equals one device's dispatch of the kept ones."""
    import jax
    import jax.numpy as jnp
    from moe_ep_case import CFG, params

    lp = {k: jnp.asarray(v[0]) for k, v in params()["moe_layers"].items()}
    rng = np.random.default_rng(0)
    x, r = (jnp.asarray(rng.normal(size=(64, 32)), jnp.float32) for _ in range(2))
    gates, experts, _ = moe.route(x, lp, CFG)

    def loss(x, gates, lp, cfg):
        y, kept = moe.routed_experts(x, gates, experts, lp, cfg)
        return (y * r).sum(), kept

    grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), static_argnums=3)
    (want, _), want_g = grad(x, gates, lp, CFG)  # no mesh set: one device
    mesh = shd.make_mesh((("fsdp", 2), ("expert", 4)))
    for dispatch in ("gather", "all_to_all"):
        with jax.set_mesh(mesh):
            (got, kept), got_g = grad(x, gates, lp, CFG.replace(expert_dispatch=dispatch))
        assert bool(kept.all())
        np.testing.assert_allclose(got, want, rtol=TOL)
        for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
            np.testing.assert_allclose(a, b, atol=TOL, rtol=0)

    capped = CFG.replace(expert_dispatch="all_to_all", capacity_factor=0.5)  # 8 per destination
    dispatch = jax.jit(moe.routed_experts, static_argnums=4)
    with jax.set_mesh(mesh):
        got, kept = dispatch(x, gates, experts, lp, capped)
    _, global_kept = dispatch(x, gates, experts, lp, CFG.replace(capacity_factor=0.5))
    assert (~kept).sum() > (~global_kept).sum() > 0  # the buffers dropped more
    assert not (kept & ~global_kept).any()
    w = jnp.where(kept, gates, 0.0)
    y = moe._grouped_ffn(x, experts, w, lp["we_gate"], lp["we_up"], lp["we_down"], CFG)
    np.testing.assert_allclose(got, y, atol=TOL, rtol=0)
