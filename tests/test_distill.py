"""Logit distillation: the chunked KL against NumPy, a short run, and the tokenizer check."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rl_utils import make_model_dir

from r1jax import sharding as shd
from r1jax import update
from r1jax.configs import common
from r1jax.configs import distill as distill_configs
from r1jax.data import embedded, packing
from r1jax.metrics import read_metrics
from r1jax.models import store
from r1jax.models import transformer as tfm
from r1jax.stages import distill as dl
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
    cfg, _ = store.load_model(student)
    # A teacher of another shape: its own ModelConfig, the same tokenizer.
    t_cfg = cfg.replace(d_model=48, n_layers=1, n_heads=3, d_ff=96, init_std=0.3)
    teacher = str(root / "teacher")
    store.save_model(teacher, _np_init(t_cfg, 1), t_cfg, store.tokenizer_path(student))
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
    c = distill_configs.logit_config(f"student={student},teacher={teacher},data={data}")
    c.mesh = (("fsdp", 1),)
    c.model.overrides.remat = False
    c.data.eval_fraction = 0.25
    c.update(row_len=64, batch_size=8, micro_batch=4, vocab_chunk=64)  # chunk < vocab: chunked
    c.optim.update(common.optim(lr=1e-2, b2=0.99))
    c.update(steps=30, log_every=30, eval_every=30, ckpt_every=100)
    return c


def _np_nll(z, targets):
    """-log softmax(z)[target] per position, in float64."""
    z = np.asarray(z, np.float64)
    logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    return logz - np.take_along_axis(z, np.asarray(targets)[:, None], -1)[:, 0]


_logits = jax.jit(tfm.logits, static_argnames="cfg")


def _completion_logits(path, examples, V):
    """Each example alone (one 64-token row): the model's logits [n, V] at the positions that
    predict the completion tokens (and EOS), concatenated."""
    cfg, params = store.load_model(path)
    out = []
    for p, c in examples:
        ids = np.zeros((1, 64), np.int32)
        ids[0, : len(p) + len(c)] = p + c
        z = np.asarray(_logits(params, ids, (np.arange(64) < len(p) + len(c))[None], cfg=cfg))
        out.append(z[0, len(p) - 1 : len(p) + len(c) - 1, :V])
    return np.concatenate(out)


def _encode(tok, rows):
    return [
        (tok.encode_prompt(r["prompt"]), tok.encode(r["completion"]) + [tok.eos_id]) for r in rows
    ]


def test_train_step_loss_is_t2_times_the_mean_kl_micro_batched_and_sharded(dirs):
    """distill_loss through update.make_train_step with the teacher as a frozen argument: two
    micro-batches over a 2 x 2 mesh give T^2 x the mean KL (at T) over every target token."""
    student, teacher, _, rows = dirs
    tok = load_tokenizer(store.tokenizer_path(student))
    ex = _encode(tok, rows[:8])
    z_t, z_s = (_completion_logits(path, ex, tok.vocab_size) for path in (teacher, student))
    want = 4.0 * np_kl(z_t, z_s, 2.0).mean()
    mesh = shd.make_mesh((("data", 2), ("fsdp", 2)))
    cfg, params = store.load_model(student, mesh)
    t_cfg, t_params = store.load_model(teacher, mesh)
    optimizer = optax.sgd(1.0)
    state = update.init_state(params, optimizer, mesh)
    batch, sh = update.put_batch(mesh, packing.pack(ex, 64, packing=False), 4)
    kw = dict(vocab_size=tok.vocab_size, temperature=2.0, vocab_chunk=64)
    step = update.make_train_step(
        functools.partial(dl.distill_loss, t2=4.0, cfg=cfg, teacher_cfg=t_cfg, **kw),
        optimizer,
        state_shardings=update.shardings_of(state),
        batch_shardings=sh,
        frozen_shardings=(update.shardings_of(t_params),),
        prepare=packing.count_targets,
    )
    _, m = step(state, batch, t_params)
    assert float(m["loss"]) == pytest.approx(want, rel=1e-4)
    assert float(m["tokens"]) == len(z_t) == sum(len(c) for _, c in ex)
    assert float(m["grad_norm"]) > 0 and float(m["skipped"]) == 0.0


def test_distillation_reduces_kl(dirs, tmp_path):
    student, teacher, data, rows = dirs
    work = str(tmp_path / "run")
    dl.run(_config(student, teacher, data), work)
    m = read_metrics(work)
    assert [r["step"] for r in m] == [0, 30]
    # Step 0 pinned by NumPy: mean KL over the completion tokens (and EOS) of the 10 eval rows,
    # and each model's NLL of those tokens.
    tok = load_tokenizer(store.tokenizer_path(student))
    ex = _encode(tok, rows[:10])
    z_t, z_s = (_completion_logits(path, ex, tok.vocab_size) for path in (teacher, student))
    targets = [t for _, c in ex for t in c]
    assert m[0]["eval/kl"] == pytest.approx(np_kl(z_t, z_s).mean(), rel=1e-4)
    assert m[0]["eval/teacher_nll"] == pytest.approx(_np_nll(z_t, targets).mean(), rel=1e-5)
    assert m[0]["eval/student_nll"] == pytest.approx(_np_nll(z_s, targets).mean(), rel=1e-5)
    assert m[-1]["eval/kl"] < 0.6 * m[0]["eval/kl"]  # held-out rows
    assert m[-1]["eval/teacher_nll"] == pytest.approx(m[0]["eval/teacher_nll"], rel=1e-6)  # frozen
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
    s_dir = store.tokenizer_path(student)
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
        dl.run(c, str(tmp_path / "run"))
    assert "vocab_size: student 160, teacher 150" in str(e.value)
