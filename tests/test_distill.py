"""Logit distillation: the chunked KL against NumPy, a short run, and the tokenizer check."""

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
from r1jax import distill as dl
from r1jax.data import embedded
from r1jax.metrics import read_metrics
from r1jax.models import transformer as tfm
from r1jax.tokenizer import load_tokenizer, train_sentencepiece


def np_kl(z_t, z_s, temperature=1.0):
    def log_softmax(z):
        z = z / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(np.asarray(z_t, np.float64)), log_softmax(np.asarray(z_s, np.float64))
    return (np.exp(lt) * (lt - ls)).sum(-1)


def test_kl_by_hand():
    # p_T = (1/2, 1/2), p_S = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3) = 1/2 log(4/3).
    kl = dl.kl_from_logits(jnp.array([0.0, 0.0]), jnp.array([0.0, np.log(3.0)]))
    assert float(kl) == pytest.approx(0.5 * np.log(4 / 3), rel=1e-6)
    assert float(dl.kl_from_logits(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))) == 0.0


@pytest.mark.parametrize("chunk", [2, 8])  # 3 chunks (the last one padded) / one direct pass
def test_token_kl_matches_numpy(chunk):
    rng = np.random.default_rng(0)
    z_t = rng.normal(size=(2, 3, 5)) * 2
    z_s = rng.normal(size=(2, 3, 5))
    z_s[1, 2] = z_t[1, 2]  # identical distributions: KL 0
    eye = jnp.eye(5)  # hidden states = logits, unembedding = identity

    def f(h_s, h_t):
        return dl.token_kl(h_s, eye, h_t, eye, temperature=2.0, vocab_chunk=chunk)

    kl = f(jnp.asarray(z_s, jnp.float32), jnp.asarray(z_t, jnp.float32))
    want = np_kl(z_t, z_s, 2.0)
    np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-6)
    assert abs(float(kl[1, 2])) < 1e-6
    # d sum(KL) / d z_S = (p_S - p_T) / T; the teacher gets no gradient.
    g_s, g_t = jax.grad(lambda a, b: f(a, b).sum(), argnums=(0, 1))(
        jnp.asarray(z_s, jnp.float32), jnp.asarray(z_t, jnp.float32)
    )
    p = lambda z: np.exp(z / 2) / np.exp(z / 2).sum(-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(g_s, (p(z_s) - p(z_t)) / 2, rtol=1e-5, atol=1e-6)
    assert not np.any(np.asarray(g_t))


def _np_init(cfg, seed):
    """Parameters from the declarations, in NumPy (no compilation)."""
    rng = np.random.default_rng(seed)
    init = {
        "normal": lambda s: (cfg.init_std * rng.normal(size=s.shape)).astype(np.float32),
        "ones": lambda s: np.ones(s.shape, np.float32),
        "zeros": lambda s: np.zeros(s.shape, np.float32),
    }
    return jax.tree.map(
        lambda s: init[s.init](s), tfm.param_specs(cfg), is_leaf=lambda x: hasattr(x, "init")
    )


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    student = make_model_dir(str(root / "student"))
    cfg, _ = checkpoint.load_model(student)
    # A teacher of another shape: its own ModelConfig, the same tokenizer.
    t_cfg = cfg.replace(d_model=48, n_layers=1, n_heads=3, d_ff=96, init_std=0.3)
    teacher = str(root / "teacher")
    checkpoint.save_model(teacher, _np_init(t_cfg, 1), t_cfg, checkpoint.tokenizer_path(student))
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        a, b = (int(x) for x in rng.integers(1, 50, size=2))
        rows.append(
            {
                "prompt": f"User: Compute {a} + {b}. Assistant:",
                "completion": f" <think> {a} + {b} = {a + b}. </think> <answer> {a + b} </answer>",
            }
        )
    data = root / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return student, teacher, str(data), rows


def _config(student, teacher, data):
    return ml_collections.ConfigDict(
        dict(
            seed=0,
            mesh=[("fsdp", 1)],
            model=dict(init=student, preset="tiny", overrides=dict(remat=False)),
            teacher=dict(init=teacher, overrides={}, tokenizer_path=""),
            tokenizer=dict(path=""),
            data=dict(source=f"jsonl:{data}", loss_on_prompt=False, eval_fraction=0.25),
            distill=dict(temperature=1.0),
            row_len=64,
            batch_rows=8,
            micro_rows=4,
            steps=30,
            vocab_chunk=64,  # < vocab: the chunked path
            optim=configs.optim(lr=1e-2, b2=0.99),
            log_every=30,
            ckpt_every=100,
        )
    )


def test_distillation_reduces_kl(dirs, tmp_path):
    student, teacher, data, rows = dirs
    work = str(tmp_path / "run")
    dl.train_distill(_config(student, teacher, data), work)
    m = read_metrics(work)
    assert [r["step"] for r in m] == [0, 30]
    # Step 0 pinned by NumPy: mean KL over the completion tokens (and EOS) of the 10 eval rows.
    tok = load_tokenizer(checkpoint.tokenizer_path(student))
    want = []
    logits = jax.jit(tfm.logits, static_argnames="cfg")
    for path in (teacher, student):
        cfg, params = checkpoint.load_model(path)
        out = []
        for r in rows[:10]:
            p, c = tok.encode(r["prompt"], add_bos=True), tok.encode(r["completion"]) + [tok.eos_id]
            ids = np.zeros((1, 64), np.int32)
            ids[0, : len(p) + len(c)] = p + c
            z = np.asarray(logits(params, ids, (np.arange(64) < len(p) + len(c))[None], cfg=cfg))
            out.append(z[0, len(p) - 1 : len(p) + len(c) - 1, : tok.vocab_size])
        want.append(np.concatenate(out))
    assert m[0]["eval/kl"] == pytest.approx(np_kl(*want).mean(), rel=1e-4)
    assert m[-1]["eval/kl"] < 0.6 * m[0]["eval/kl"]  # held-out rows
    assert m[-1]["train/loss"] == pytest.approx(m[-1]["train/kl"])  # temperature 1
    assert os.path.isfile(os.path.join(work, "model", "model_config.json"))


def _tokenizer(path, vocab, symbols=()):
    docs = [p + c for p, c in embedded.corpus(300, seed=1)]
    train_sentencepiece(
        docs,
        os.path.join(path, "sp"),
        vocab,
        user_defined_symbols=symbols,
        byte_fallback=False,
        split_by_whitespace=False,
        max_sentencepiece_length=24,
    )
    return load_tokenizer(path)


def test_tokenizer_mismatch_is_named(dirs, tmp_path):
    student, _, data, _ = dirs
    s_dir = checkpoint.tokenizer_path(student)
    tok = load_tokenizer(s_dir)
    assert dl.tokenizer_differences(tok, _tokenizer(str(tmp_path / "same"), 160)) == []
    small = _tokenizer(str(tmp_path / "small"), 150)
    with pytest.raises(ValueError, match=r"vocab_size: student 160, teacher 150"):
        dl.check_same_tokenizer(tok, small)
    other = _tokenizer(str(tmp_path / "other"), 160, symbols=("<x>",))
    assert other.vocab_size == 160
    diffs = dl.tokenizer_differences(tok, other)
    assert any(d.startswith("encode('Compute 17 + 8") for d in diffs)
    # The run fails on it before any model is loaded: the teacher dir holds only a tokenizer.
    c = _config(student, str(tmp_path / "small"), data)
    with pytest.raises(ValueError, match=r"teacher's tokenizer \(.*small\) differs") as e:
        dl.train_distill(c, str(tmp_path / "run"))
    assert "vocab_size: student 160, teacher 150" in str(e.value)
