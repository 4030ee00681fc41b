"""Reward model: the pairwise (Bradley-Terry) and pointwise losses, the train step on them,
score read-out, the GRPO reward, short training runs of both objectives, bad data."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rl_utils import make_model_dir

from r1jax import configs, update
from r1jax import sharding as shd
from r1jax.configs import common
from r1jax.data import preferences
from r1jax.data.preferences import encode_text, pad_right
from r1jax.data.sources import DataError
from r1jax.metrics import read_metrics
from r1jax.models import reward_head, store
from r1jax.models import transformer as tfm
from r1jax.rewards import RewardStack, get_reward_fn
from r1jax.rewards import reward_model as rmr
from r1jax.stages import reward_model as rm
from r1jax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("base")))


@pytest.fixture(scope="module")
def rm_dir(base, tmp_path_factory):
    cfg, model = store.load_model(base)
    head = reward_head.init_head(cfg.replace(init_std=1.0), jax.random.key(3), _one_device())
    path = os.path.join(str(tmp_path_factory.mktemp("rm")), "rm")
    reward_head.save(path, {"model": model, "head": head}, cfg, store.tokenizer_path(base))
    return path


def _one_device():
    return shd.make_mesh([("fsdp", 1)])


_scores = jax.jit(reward_head.scores, static_argnames="cfg")
_forward = jax.jit(tfm.forward, static_argnames="cfg")


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def test_pairwise_nll_and_gradient():
    rc = np.array([1.0, -0.5, 2.0, 0.3, 40.0])
    rr = np.array([0.0, 0.5, 2.5, 0.3, -40.0])
    d = rr - rc
    sig = 1 / (1 + np.exp(-d))
    nll = np.log1p(np.exp(d))  # -log sigmoid(rc - rr)
    got = rm.pairwise_nll(jnp.asarray(rc), jnp.asarray(rr))
    np.testing.assert_allclose(got, nll, rtol=1e-6, atol=1e-12)
    w = np.array([1.0, 1.0, 0.5, 0.0, 2.0])  # a weighted sum: gradient w * (-sig, sig)
    gc, gr = jax.grad(lambda a, b: (jnp.asarray(w) * rm.pairwise_nll(a, b)).sum(), argnums=(0, 1))(
        jnp.asarray(rc), jnp.asarray(rr)
    )
    np.testing.assert_allclose(gc, -w * sig, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(gr, w * sig, rtol=1e-6, atol=1e-12)
    assert float(rm.pairwise_nll(jnp.zeros(()), jnp.zeros(()))) == pytest.approx(np.log(2))


def test_pointwise_nll_and_gradient():
    r = np.array([1.5, -0.5, 0.2, -2.0, 0.7])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-r))
    nll = -(y * np.log(p) + (1 - y) * np.log(1 - p))  # binary cross-entropy on sigmoid(r)
    np.testing.assert_allclose(rm.pointwise_nll(jnp.asarray(r), jnp.asarray(y)), nll, rtol=1e-6)
    w = np.array([1.0, 0.5, 1.0, 1.0, 0.0])  # a weighted sum: gradient w * (p - y)
    g = jax.grad(lambda a: (jnp.asarray(w) * rm.pointwise_nll(a, jnp.asarray(y))).sum())(
        jnp.asarray(r)
    )
    np.testing.assert_allclose(g, w * (p - y), rtol=1e-6, atol=1e-7)
    # Saturated scores stay finite: -log sigmoid(-50) = 50 + log(1 + e^-50).
    assert float(rm.pointwise_nll(jnp.float32(50.0), 0.0)) == pytest.approx(50.0, rel=1e-7)


def test_score_is_head_dot_last_hidden_state(base):
    cfg, model = store.load_model(base)
    head = reward_head.init_head(cfg, jax.random.key(1), _one_device())
    head["b"] = jnp.asarray(0.25)
    params = {"model": model, "head": head}
    seqs = [[5, 9, 2, 7, 1], [3, 3, 8], [11, 4, 6, 2, 9, 10, 1]]
    right = pad_right(seqs, 0, 8)
    left = tuple(np.stack([np.roll(a, 8 - len(s)) for a, s in zip(x, seqs)]) for x in right)
    got_r = np.asarray(_scores(params, *right, cfg=cfg))
    got_l = np.asarray(_scores(params, *left, cfg=cfg))
    # By hand: one causal forward over the right-padded rows (padding comes after the real
    # tokens, so it cannot reach them), then w . h + b at each row's last real position.
    tokens = jnp.asarray(right[0])
    h = np.asarray(
        _forward(model, tokens, jnp.broadcast_to(jnp.arange(8), (3, 8)), tokens * 0 + 1, cfg=cfg)
    )
    want = [h[i, len(s) - 1] @ np.asarray(head["w"]) + 0.25 for i, s in enumerate(seqs)]
    np.testing.assert_allclose(got_r, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_l, want, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(got_r, 6))) == 3


def test_summary_text():
    assert rmr.summary_text("Q:", "<think> a </think> the answer") == " the answer"
    assert rmr.summary_text("Q: <think>", " a </think> B") == " B"  # prompt opened the block
    assert rmr.summary_text("Q:", "<think> never closed") == ""
    assert rmr.summary_text("Q: <think>", " never closed") == ""
    assert rmr.summary_text("Q:", "no tags at all") == "no tags at all"
    assert rmr.summary_text("Q:", "<think> a </think> b </think> c") == " b </think> c"


def _direct(path, prompt, responses):
    """Scores of prompt + each response, one sequence at a time (right-padded to 64)."""
    cfg, params = reward_head.load(path)
    tok = load_tokenizer(store.tokenizer_path(path))
    out = []
    for r in responses:
        ids, _ = encode_text(tok, prompt, r, 4096)
        out.append(float(_scores(params, *pad_right([ids], tok.pad_id, 64), cfg=cfg)[0]))
    return out


def test_reward_scopes_read_the_right_text(rm_dir):
    prompt = "User: Compute 3 + 4. Assistant:"
    comp = " <think> 3 + 4 = 7. </think> <answer> 7 </answer>"
    summary = rmr.RewardModelReward(checkpoint=rm_dir, scope="summary")
    full = get_reward_fn("reward_model", checkpoint=rm_dir, scope="full")  # via the registry
    s, f = summary([prompt], [comp])[0], full([prompt], [comp])[0]
    want_s, want_f = _direct(rm_dir, prompt, [" <answer> 7 </answer>", comp])
    assert s == pytest.approx(want_s, abs=1e-5) and f == pytest.approx(want_f, abs=1e-5)
    assert abs(s - f) > 1e-4
    # Batched calls (padding, copies) give the same numbers; so does a RewardStack in-process.
    comps = [comp, " <think> x </think> 5", " 7", "<think> unfinished"]
    batched = rmr.RewardModelReward(checkpoint=rm_dir, scope="summary", batch_size=3)
    one_by_one = [summary([prompt], [c])[0] for c in comps]
    np.testing.assert_allclose(batched([prompt] * 4, comps), one_by_one, atol=1e-5)
    stack = RewardStack([dict(name="reward_model", kwargs=dict(checkpoint=rm_dir))])
    np.testing.assert_allclose(stack([prompt] * 4, comps).total, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="scope must be one of"):
        rmr.RewardModelReward(checkpoint=rm_dir, scope="cot")
    with pytest.raises(FileNotFoundError, match="reward_head.npz"):
        rmr.RewardModelReward(checkpoint=os.path.dirname(rm_dir))


def _pairs(n, seed):
    """Chosen: a digit string with some digits replaced by 7; rejected: the same without."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        digits = rng.choice([1, 2, 3, 4, 5, 6, 8, 9], size=6)
        seven = digits.copy()
        seven[rng.choice(6, size=3, replace=False)] = 7
        q = f"Compute {digits[0]} + {digits[1]}. Assistant:"
        out.append(
            {
                "prompt": q,
                "chosen": " " + " ".join(map(str, seven)),
                "rejected": " " + " ".join(map(str, digits)),
            }
        )
    return out


def _labelled(n, seed):
    """The pairs' two sides as labelled responses: with 7s (label 1) or without (0)."""
    return [
        {"prompt": p["prompt"], "response": p[side], "label": int(side == "chosen")}
        for p in _pairs(n, seed)
        for side in ("chosen", "rejected")
    ]


def _rm_config(base, data, objective="pairwise", eval_fraction=0.25):
    c = configs.load(f"reward_model:model={base},data={data},objective={objective}")
    c.mesh = (("fsdp", 1),)
    c.model.overrides.remat = False
    c.data.eval_fraction = eval_fraction
    c.update(row_len=32, batch_size=16, micro_batch=8)
    c.optim.update(common.optim(lr=3e-3, b2=0.99))
    c.update(steps=20, log_every=20, eval_every=20, ckpt_every=100)
    return c


def test_train_step_is_the_mean_pair_nll_micro_batched_and_sharded(base):
    """rm_loss through update.make_train_step: the loss and metrics are means over the valid
    pairs of the whole batch (a padding pair counts for nothing), the update is its gradient
    (SGD, lr 1), with two micro-batches split over a 2 x 2 mesh."""
    cfg, model = store.load_model(base)
    head = reward_head.init_head(cfg.replace(init_std=1.0), jax.random.key(5), _one_device())
    params = jax.device_get({"model": model, "head": head})
    tok = load_tokenizer(store.tokenizer_path(base))
    rows, _ = preferences.encode_rows(_pairs(7, 1), tok, 32, "pairwise")
    rows = {k: np.pad(v, [(0, 1)] + [(0, 0)] * (v.ndim - 1)) for k, v in rows.items()}
    assert rows["valid"].tolist() == [1.0] * 7 + [0.0]

    def reference(p):  # the 7 real pairs, chosen and rejected in separate forward passes
        rc = reward_head.scores(p, rows["chosen_tokens"][:7], rows["chosen_mask"][:7], cfg)
        rr = reward_head.scores(p, rows["rejected_tokens"][:7], rows["rejected_mask"][:7], cfg)
        return jnp.mean(jax.nn.softplus(rr - rc)), (rc, rr)

    (loss, (rc, rr)), grads = jax.jit(jax.value_and_grad(reference, has_aux=True))(params)
    rc, rr = np.asarray(rc, np.float64), np.asarray(rr, np.float64)
    assert float(loss) == pytest.approx(_np_softplus(rr - rc).mean(), rel=1e-5)

    mesh = shd.make_mesh((("data", 2), ("fsdp", 2)))
    sh = {"model": tfm.param_shardings(cfg, mesh), "head": reward_head.head_shardings(cfg, mesh)}
    optimizer = optax.sgd(1.0)
    state = update.init_state(jax.device_put(params, sh), optimizer, mesh)
    batch, batch_sh = update.put_batch(mesh, rows, 4)
    step = update.make_train_step(
        functools.partial(rm.rm_loss, cfg=cfg, objective="pairwise"),
        optimizer,
        state_shardings=update.shardings_of(state),
        batch_shardings=batch_sh,
        prepare=rm.count_examples,
    )
    state, m = step(state, batch)
    m = jax.device_get(m)
    assert float(m["loss"]) == pytest.approx(float(loss), rel=1e-5)
    assert float(m["examples"]) == 7
    assert float(m["accuracy"]) == pytest.approx(np.mean(rc > rr), abs=1e-6)
    assert float(m["margin"]) == pytest.approx(np.mean(rc - rr), rel=1e-5)
    assert float(m["grad_norm"]) == pytest.approx(float(optax.global_norm(grads)), rel=1e-5)
    want = jax.tree.map(lambda p, g: p - g, params, grads)
    for a, b in zip(jax.tree.leaves(jax.device_get(state["params"])), jax.tree.leaves(want)):
        # 1e-5 of the tensor's scale: the sharded micro-batched gradient sums in another order
        # (one element of 1024 was 1.01e-6 off at 1e-6 on a loaded machine).
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(np.abs(b).max(), 1.0))


def test_training_on_separable_pairs_raises_accuracy(base, tmp_path):
    data = tmp_path / "pairs.jsonl"
    pairs = _pairs(80, 0)
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    rm.run(_rm_config(base, data), str(tmp_path / "run"))
    m = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in m] == [0, 20]
    assert m[0]["eval/accuracy"] < 0.75 and m[-1]["eval/accuracy"] >= 0.95
    assert m[-1]["eval/loss"] < 0.5 * m[0]["eval/loss"]
    # The saved directory scores like the trained state: its scores of the 20 held-out pairs
    # give the last evaluation's metrics (computed in the run from the live parameters).
    saved = str(tmp_path / "run" / "reward_model")
    fn = rmr.RewardModelReward(checkpoint=saved, scope="full", max_len=32)
    held_out = pairs[:20]
    prompts = [p["prompt"] for p in held_out]
    rc = np.asarray(fn(prompts, [p["chosen"] for p in held_out]), np.float64)
    rr = np.asarray(fn(prompts, [p["rejected"] for p in held_out]), np.float64)
    assert m[-1]["eval/margin"] == pytest.approx(np.mean(rc - rr), abs=1e-4)
    assert m[-1]["eval/loss"] == pytest.approx(_np_softplus(rr - rc).mean(), abs=1e-4)
    assert m[-1]["eval/accuracy"] == np.mean(rc > rr)
    # ... and ranks a pair it has never seen.
    pair = _pairs(1, 99)[0]
    r_chosen, r_rejected = fn([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])
    assert r_chosen > r_rejected


def test_pointwise_training_separates_the_labels(base, tmp_path):
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _labelled(40, 0)))
    rm.run(_rm_config(base, data, "pointwise"), str(tmp_path / "run"))
    m = read_metrics(str(tmp_path / "run"))
    assert m[0]["eval/accuracy"] < 0.75 and m[-1]["eval/accuracy"] >= 0.95
    assert m[-1]["eval/loss"] < 0.5 * m[0]["eval/loss"]
    # Absolute scores: held-out good responses above 0, bad ones below (not only ranked).
    fn = rmr.RewardModelReward(checkpoint=str(tmp_path / "run" / "reward_model"), scope="full")
    rows = _labelled(4, 99)
    r = np.asarray(fn([x["prompt"] for x in rows], [x["response"] for x in rows]))
    labels = np.asarray([x["label"] for x in rows])
    assert np.all((r > 0) == (labels == 1)), (r, labels)


@pytest.mark.parametrize(
    "row, objective, message",
    [
        ({"prompt": "q", "response": "a"}, "pointwise", "line 2: field 'label'"),
        ({"prompt": "q", "response": "a", "label": 2}, "pointwise", "line 2: field 'label'"),
        ({"prompt": "q", "label": 1}, "pointwise", "line 2: field 'response'"),
        ({"prompt": "q", "chosen": "a"}, "pairwise", "line 2: field 'rejected'"),
    ],
)
def test_bad_rows_fail_before_anything_is_written(base, tmp_path, row, objective, message):
    good = _labelled(1, 0)[0] if objective == "pointwise" else _pairs(1, 0)[0]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    workdir = tmp_path / "run"
    with pytest.raises(DataError, match=f"d.jsonl, {message}"):
        rm.run(_rm_config(base, data, objective), str(workdir))
    assert not workdir.exists()
    with pytest.raises(ValueError, match="config.objective='ranking'"):
        rm.run(_rm_config(base, data, "ranking"), str(workdir))
