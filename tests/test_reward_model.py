"""Reward model: Bradley-Terry and pointwise losses, score read-out, the GRPO reward, short
training runs of both objectives, bad data."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from rl_utils import make_model_dir

import configs
from r1jax import checkpoint
from r1jax import reward_model as rm
from r1jax import sharding as shd
from r1jax.data.sources import DataError
from r1jax.metrics import read_metrics
from r1jax.models import transformer as tfm
from r1jax.rewards import RewardStack, get_reward_fn
from r1jax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_model_dir(str(tmp_path_factory.mktemp("base")))


@pytest.fixture(scope="module")
def rm_dir(base, tmp_path_factory):
    cfg, model = checkpoint.load_model(base)
    head = rm.init_head(cfg.replace(init_std=1.0), jax.random.key(3), _one_device())
    path = os.path.join(str(tmp_path_factory.mktemp("rm")), "rm")
    rm.save_reward_model(path, {"model": model, "head": head}, cfg, checkpoint.tokenizer_path(base))
    return path


def _one_device():
    return shd.make_mesh([("fsdp", 1)])


_scores = jax.jit(rm.scores, static_argnames="cfg")
_forward = jax.jit(tfm.forward, static_argnames="cfg")


def test_bradley_terry_loss_and_gradient():
    rc = np.array([1.0, -0.5, 2.0, 0.3])
    rr = np.array([0.0, 0.5, 2.5, 0.3])
    w = np.array([1.0, 1.0, 0.5, 0.0])
    d = rr - rc
    nll = np.log1p(np.exp(d))  # -log sigmoid(rc - rr)
    want = (w * nll).sum() / w.sum()
    sig = 1 / (1 + np.exp(-d))
    loss, (gc, gr) = jax.value_and_grad(rm.bradley_terry_loss, argnums=(0, 1))(
        jnp.asarray(rc), jnp.asarray(rr), jnp.asarray(w)
    )
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(gc, -w * sig / w.sum(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gr, w * sig / w.sum(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rm.bradley_terry_loss(rc, rr), nll.mean(), rtol=1e-6)
    assert float(rm.bradley_terry_loss(jnp.zeros(3), jnp.zeros(3))) == pytest.approx(np.log(2))


def test_pointwise_loss_and_gradient():
    r = np.array([1.5, -0.5, 0.2, -2.0, 0.7])
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0])
    w = np.array([1.0, 0.5, 1.0, 1.0, 0.0])
    p = 1 / (1 + np.exp(-r))
    nll = -(y * np.log(p) + (1 - y) * np.log(1 - p))  # binary cross-entropy on sigmoid(r)
    loss, g = jax.value_and_grad(rm.pointwise_loss)(jnp.asarray(r), jnp.asarray(y), jnp.asarray(w))
    np.testing.assert_allclose(loss, (w * nll).sum() / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(g, w * (p - y) / w.sum(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rm.pointwise_loss(r, y), nll.mean(), rtol=1e-6)


def test_score_is_head_dot_last_hidden_state(base):
    cfg, model = checkpoint.load_model(base)
    head = rm.init_head(cfg, jax.random.key(1), _one_device())
    head["b"] = jnp.asarray(0.25)
    params = {"model": model, "head": head}
    seqs = [[5, 9, 2, 7, 1], [3, 3, 8], [11, 4, 6, 2, 9, 10, 1]]
    right = rm.pad_right(seqs, 0, 8)
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
    assert rm.summary_text("Q:", "<think> a </think> the answer") == " the answer"
    assert rm.summary_text("Q: <think>", " a </think> B") == " B"  # prompt opened the block
    assert rm.summary_text("Q:", "<think> never closed") == ""
    assert rm.summary_text("Q: <think>", " never closed") == ""
    assert rm.summary_text("Q:", "no tags at all") == "no tags at all"
    assert rm.summary_text("Q:", "<think> a </think> b </think> c") == " b </think> c"


def _direct(path, prompt, responses):
    """Scores of prompt + each response, one sequence at a time (right-padded to 64)."""
    cfg, params = rm.load_reward_model(path)
    tok = load_tokenizer(checkpoint.tokenizer_path(path))
    out = []
    for r in responses:
        ids, _ = rm.encode_text(tok, prompt, r, 4096)
        out.append(float(_scores(params, *rm.pad_right([ids], tok.pad_id, 64), cfg=cfg)[0]))
    return out


def test_reward_scopes_read_the_right_text(rm_dir):
    prompt = "User: Compute 3 + 4. Assistant:"
    comp = " <think> 3 + 4 = 7. </think> <answer> 7 </answer>"
    summary = rm.RewardModelReward(checkpoint=rm_dir, scope="summary")
    full = get_reward_fn("reward_model", checkpoint=rm_dir, scope="full")  # via the registry
    s, f = summary([prompt], [comp])[0], full([prompt], [comp])[0]
    want_s, want_f = _direct(rm_dir, prompt, [" <answer> 7 </answer>", comp])
    assert s == pytest.approx(want_s, abs=1e-5) and f == pytest.approx(want_f, abs=1e-5)
    assert abs(s - f) > 1e-4
    # Batched calls (padding, copies) give the same numbers; so does a RewardStack in-process.
    comps = [comp, " <think> x </think> 5", " 7", "<think> unfinished"]
    batched = rm.RewardModelReward(checkpoint=rm_dir, scope="summary", batch_size=3)
    one_by_one = [summary([prompt], [c])[0] for c in comps]
    np.testing.assert_allclose(batched([prompt] * 4, comps), one_by_one, atol=1e-5)
    stack = RewardStack([dict(name="reward_model", kwargs=dict(checkpoint=rm_dir))])
    np.testing.assert_allclose(stack([prompt] * 4, comps).total, one_by_one, atol=1e-5)
    with pytest.raises(ValueError, match="scope must be one of"):
        rm.RewardModelReward(checkpoint=rm_dir, scope="cot")
    with pytest.raises(FileNotFoundError, match="reward_head.npz"):
        rm.RewardModelReward(checkpoint=os.path.dirname(rm_dir))


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
    return ml_collections.ConfigDict(
        dict(
            seed=0,
            objective=objective,
            mesh=[("fsdp", 1)],
            model=dict(init=base, preset="tiny", overrides=dict(remat=False)),
            tokenizer=dict(path=""),
            data=dict(source=f"jsonl:{data}", eval_fraction=eval_fraction),
            max_len=32,
            batch_pairs=16,
            micro_pairs=8,
            steps=20,
            optim=configs.optim(lr=3e-3, b2=0.99),
            log_every=20,
            ckpt_every=100,
        )
    )


def test_training_on_separable_pairs_raises_accuracy(base, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in _pairs(80, 0)))
    state, cfg = rm.train_reward_model(_rm_config(base, data), str(tmp_path / "run"))
    m = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in m] == [0, 20]
    assert m[0]["eval/accuracy"] < 0.75 and m[-1]["eval/accuracy"] >= 0.95
    assert m[-1]["eval/loss"] < 0.5 * m[0]["eval/loss"]
    # The saved directory scores like the trained state, and ranks held-out pairs.
    saved = str(tmp_path / "run" / "reward_model")
    fn = rm.RewardModelReward(checkpoint=saved, scope="full", max_len=32)
    pair = _pairs(1, 99)[0]
    rc, rr = fn([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])
    assert rc > rr
    tok = load_tokenizer(checkpoint.tokenizer_path(saved))
    ids, _ = rm.encode_text(tok, pair["prompt"], pair["chosen"], 32)
    live = _scores(state["params"], *rm.pad_right([ids], tok.pad_id, len(ids)), cfg=cfg)
    assert rc == pytest.approx(float(live[0]), abs=1e-5)


def test_pointwise_training_separates_the_labels(base, tmp_path):
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _labelled(40, 0)))
    rm.train_reward_model(_rm_config(base, data, "pointwise"), str(tmp_path / "run"))
    m = read_metrics(str(tmp_path / "run"))
    assert m[0]["eval/accuracy"] < 0.75 and m[-1]["eval/accuracy"] >= 0.95
    assert m[-1]["eval/loss"] < 0.5 * m[0]["eval/loss"]
    # Absolute scores: held-out good responses above 0, bad ones below (not only ranked).
    fn = rm.RewardModelReward(checkpoint=str(tmp_path / "run" / "reward_model"), scope="full")
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
        rm.train_reward_model(_rm_config(base, data, objective), str(workdir))
    assert not workdir.exists()
    with pytest.raises(ValueError, match="config.objective='ranking'"):
        rm.train_reward_model(_rm_config(base, data, "ranking"), str(workdir))
