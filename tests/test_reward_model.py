"""Reward model: Bradley-Terry loss, score read-out, the GRPO reward, a short training run."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from rl_utils import make_model_dir

from r1jax import checkpoint
from r1jax import reward_model as rm
from r1jax import sharding as shd
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


def test_training_on_separable_pairs_raises_accuracy(base, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in _pairs(80, 0)))
    c = ml_collections.ConfigDict(
        dict(
            seed=0,
            mesh=[("fsdp", 1)],
            model=dict(init=base, preset="tiny", overrides=dict(remat=False)),
            tokenizer=dict(path=""),
            data=dict(source=f"jsonl:{data}", eval_fraction=0.25),
            max_len=32,
            batch_pairs=16,
            micro_pairs=8,
            steps=20,
            optim=dict(
                lr=3e-3,
                warmup_steps=0,
                schedule="constant",
                weight_decay=0.0,
                b1=0.9,
                b2=0.99,
                eps=1e-8,
                grad_clip=1.0,
                total_steps=0,
            ),
            log_every=20,
            ckpt_every=100,
        )
    )
    state, cfg = rm.train_reward_model(c, str(tmp_path / "run"))
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
