"""Runs never save garbage, and bad input is one line naming the field or file (issue 13, part 3).

Each test is a hostile case: a NaN or negative learning rate, an update that overflows the
parameters, a state with an inf, a corrupt latest checkpoint, a second run in a held workdir, a
full disk, a truncated safetensors or orbax file, an empty or unreadable eval file. The training
cases run the real loop (r1jax.loop) and update builder (r1jax.update) on a 3-parameter
least-squares model, so they take a second, not a compile of a transformer.
"""

import errno
import logging
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from etils import epath

from r1jax import checkpoint, cli, configs, files, loop, optim, rollout, update
from r1jax import sharding as shd
from r1jax.configs import common
from r1jax.data import DataError
from r1jax.errors import ConfigError, FileError, StateError
from r1jax.models import get_preset, hf, init_params, store
from r1jax.stages import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the toy trainer: the real loop and update builder on least squares ---------------------------


def _config(steps, **kw):
    c = ml_collections.ConfigDict(common.loop(steps, ckpt_every=2, max_nonfinite_in_a_row=3))
    c.optim = common.optim(lr=0.1, grad_clip=0.0, total_steps=steps)
    for k, v in kw.items():
        (c.optim if k in c.optim else c)[k] = v
    return c


def _toy_run(c, poison_at=None):
    """A loop.Run fitting w in x.w = y with AdamW from config.optim; `poison_at`: the step whose
    new state gets an inf in w behind the guard's back (a bug the checkpointer must stop)."""
    mesh = shd.make_mesh((("fsdp", 1),))
    optimizer, _ = optim.make_optimizer(c.optim)
    rng = np.random.default_rng(0)
    rows = {"x": rng.normal(size=(8, 3)).astype(np.float32)}
    rows["y"] = rows["x"] @ np.array([1.0, -2.0, 0.5], np.float32)

    def loss_fn(params, mb, ctx):
        return ((mb["x"] @ params["w"] - mb["y"]) ** 2).sum() / 8, {}

    params = {"w": jax.device_put(jnp.zeros(3), shd.replicated(mesh))}
    state = update.init_state(params, optimizer, mesh)
    batch, bs = update.put_batch(mesh, rows, 4)
    train = update.make_train_step(
        loss_fn, optimizer, state_shardings=update.shardings_of(state), batch_shardings=bs
    )

    def step(i, state):
        state, m = train(state, batch)
        if i == poison_at:
            state = {**state, "params": {"w": state["params"]["w"].at[0].set(jnp.inf)}}
        return state, {f"train/{k}": v for k, v in m.items()}, []

    return loop.Run("toy", state, step)


def _saved_w(wd) -> dict[int, np.ndarray]:
    """Every checkpoint on disk: step -> the saved w (read back with orbax, not our code)."""
    root = wd / "checkpoints"
    out = {}
    for step in sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()):
        with ocp.StandardCheckpointer() as ck:
            out[step] = np.asarray(ck.restore(root / str(step) / "state")["params"]["w"])
    return out


# -- optimizer and sampling settings --------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr", float("nan"), "config.optim.lr=nan: must be a finite number > 0"),
        ("lr", -1e-5, "config.optim.lr=-1e-05: must be a finite number > 0"),
        ("lr", 0.0, "config.optim.lr=0.0: must be a finite number > 0"),
        ("b1", 1.0, "config.optim.b1=1.0: must be a finite number in [0, 1)"),
        ("b2", -0.1, "config.optim.b2=-0.1: must be a finite number in [0, 1)"),
        ("eps", 0.0, "config.optim.eps=0.0: must be a finite number > 0"),
        ("weight_decay", -0.1, "config.optim.weight_decay=-0.1: must be a finite number >= 0"),
        (
            "grad_clip",
            float("inf"),
            "config.optim.grad_clip=inf: must be a finite number >= 0 (0: no clipping)",
        ),
        ("min_lr_ratio", 2.0, "config.optim.min_lr_ratio=2.0: must be a finite number in [0, 1]"),
        ("warmup_steps", -1, "config.optim.warmup_steps=-1: must be an integer >= 0"),
        ("schedule", "cosin", "config.optim.schedule='cosin': one of constant, cosine, linear"),
    ],
)
def test_bad_optimizer_settings_are_one_line_naming_the_field(field, value, message):
    ocfg = ml_collections.ConfigDict(common.optim())
    ocfg[field] = value
    with pytest.raises(ConfigError) as e:
        optim.make_optimizer(ocfg)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", float("nan"), "config.sampling.temperature=nan: must be a finite"),
        ("temperature", -1.0, "config.sampling.temperature=-1.0: must be a finite number >= 0"),
        ("top_p", 0.0, "config.sampling.top_p=0.0: must be a finite number in (0, 1]"),
        ("top_p", 1.5, "config.sampling.top_p=1.5: must be a finite number in (0, 1]"),
        ("top_k", -1, "config.sampling.top_k=-1: must be an integer >= 0"),
        ("top_k", 2.5, "config.sampling.top_k=2.5: must be an integer >= 0"),
    ],
)
def test_bad_sampling_settings_name_the_field(field, value, message):
    s = {**common.sampling(), field: value}
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        rollout.sampling_config(s, tok=None)
    # The command line checks every section of a config, wherever it is (here GRPO's eval).
    c = ml_collections.ConfigDict({"steps": 3, "eval": {"sampling": s}})
    with pytest.raises(ConfigError, match=r"^config\.eval\.sampling\." + field):
        cli.check_config(c)


def _cli(monkeypatch, capsys, command, *argv) -> tuple[int, str]:
    """(exit status, stderr) of cli.main in this process, on fresh absl flags."""
    monkeypatch.setattr(flags, "FLAGS", flags.FlagValues())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(command, [command, *argv])
    return e.value.code, capsys.readouterr().err


def test_nan_learning_rate_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    wd = tmp_path / "run"
    argv = ["--config=sft", "--config.optim.lr=nan", f"--workdir={wd}"]
    code, err = _cli(monkeypatch, capsys, "sft", *argv)
    assert (code, err) == (2, "sft: config.optim.lr=nan: must be a finite number > 0\n")
    assert not wd.exists()  # the run wrote nothing, and its lock is gone with it


# -- the guard and the checkpoints ----------------------------------------------------------------


def test_an_update_that_overflows_the_parameters_is_skipped():
    """Finite loss and gradients, but lr=1e39 makes the new parameters inf: the step is skipped
    and the old parameters and optimizer state are kept."""
    r = _toy_run(_config(1, lr=1e39))
    before = jax.device_get(r.state)
    state, m, _ = r.step(1, r.state)
    assert np.isfinite(m["train/loss"]) and np.isfinite(m["train/grad_norm"])
    assert m["train/skipped"] == 1.0
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_updates_stop_the_run_and_never_reach_a_checkpoint(tmp_path):
    """lr=1e39 passes the settings check (finite, > 0) and overflows every update: each step is
    skipped, the third in a row stops the run, and every checkpoint on disk is the finite
    starting state."""
    c = _config(10, lr=1e39)
    with pytest.raises(FloatingPointError, match="step 3: .* in 3 steps in a row"):
        loop.run(c, tmp_path, _toy_run(c))
    saved = _saved_w(tmp_path)
    assert sorted(saved) == [2, 3]
    for w in saved.values():
        np.testing.assert_array_equal(w, np.zeros(3, np.float32))
    skipped = [row["train/skipped"] for row in files.read_jsonl(tmp_path / "metrics.jsonl")]
    assert skipped == [1.0, 1.0, 1.0]


def test_a_state_with_an_inf_is_never_checkpointed(tmp_path):
    c = _config(6)
    with pytest.raises(StateError, match=r"step 4: not checkpointed: non-finite .*\['w'\]"):
        loop.run(c, tmp_path, _toy_run(c, poison_at=3))
    assert sorted(_saved_w(tmp_path)) == [2]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_latest_checkpoint_resumes_from_the_previous_one(tmp_path, caplog, damage):
    straight = _toy_run(_config(6))
    loop.run(_config(6), tmp_path / "straight", straight)
    wd = tmp_path / "run"
    loop.run(_config(4), wd, _toy_run(_config(4)))  # checkpoints 2 and 4
    data = [
        p for p in (wd / "checkpoints" / "4").rglob("*") if p.is_file() and "d" == p.parent.name
    ]
    assert data, "no array data files found in the checkpoint"
    for f in data:  # the array data of step 4
        raw = f.read_bytes()
        f.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else os.urandom(len(raw)))
    resumed = _toy_run(_config(6))
    with caplog.at_level(logging.WARNING):
        loop.run(_config(6), wd, resumed)
    warning = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warning) == 1 and "resuming from step 2" in warning[0], warning
    np.testing.assert_allclose(
        np.asarray(resumed.state["params"]["w"]), np.asarray(straight.state["params"]["w"]),
        rtol=1e-6,
    )  # fmt: skip
    steps = [row["step"] for row in files.read_jsonl(wd / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]  # rows after step 2 were redone, not repeated


def test_no_usable_checkpoint_is_an_error_naming_the_directory(tmp_path):
    loop.run(_config(2), tmp_path, _toy_run(_config(2)))
    for f in (tmp_path / "checkpoints" / "2").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"")
    with pytest.raises(StateError, match=r"no usable checkpoint in .*checkpoints \(step 2: "):
        loop.run(_config(4), tmp_path, _toy_run(_config(4)))


def test_checkpoint_bit_sums_do_not_depend_on_the_sharding():
    x = np.arange(64, dtype=np.float32).reshape(8, 8) / 7
    one = jax.device_put(x, shd.replicated(shd.make_mesh((("fsdp", 1),))))
    eight = jax.device_put(x, shd.named_sharding(("batch", None), x.shape, shd.make_mesh()))
    bits = int(np.sum(x.view(np.uint32), dtype=np.uint64) % 2**32)  # NumPy reference
    assert checkpoint.verify({"x": one})[1] == checkpoint.verify({"x": eight})[1] == [bits]
    assert checkpoint.verify({"x": one.at[3, 3].set(jnp.nan)})[0] == ["['x']"]


# -- the workdir lock ----------------------------------------------------------------------------


def _main_in_subprocess(wd, *flags):
    code = (
        "import sys\nfrom r1jax import cli\n"
        "try:\n    cli.main('train', sys.argv[1:])\n"
        "except SystemExit as e:\n    print(e.code, 'jax' in sys.modules)\n"
    )
    argv = ["train", "--config=r1zero", f"--workdir={wd}", *flags]
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_a_second_run_in_a_held_workdir_fails_with_the_lock_error_before_jax(tmp_path):
    with files.WorkdirLock(str(tmp_path)):  # this test process is the live run
        p = _main_in_subprocess(tmp_path)
    assert p.stdout.split() == ["1", "False"]  # exit status 1, JAX never imported
    assert p.stderr == (
        f"train: workdir {tmp_path} is in use by another run (pid {os.getpid()} on "
        f"{os.uname().nodename}; lock {tmp_path}/r1jax.lock); wait for it to end, or use another "
        "--workdir\n"
    )


def test_the_lock_of_a_dead_run_is_taken_over_and_others_are_left_alone(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "r1jax.lock").write_text(f"pid {dead.pid} on somehost\n")
    with caplog.at_level(logging.WARNING), files.WorkdirLock(str(tmp_path)):
        assert (tmp_path / "r1jax.lock").read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(StateError, match=f"in use by another run \\(pid {os.getpid()}"):
            files.WorkdirLock(str(tmp_path)).__enter__()
        with files.WorkdirLock(str(tmp_path), rank=1):  # not process 0: holds nothing
            pass
    assert [r.getMessage() for r in caplog.records] == [
        f"taking over {tmp_path}/r1jax.lock from a run that is gone (pid {dead.pid} on somehost)"
    ]
    assert (tmp_path / "r1jax.lock").read_text() == ""  # released in order
    caplog.clear()
    with caplog.at_level(logging.WARNING), files.WorkdirLock("gs://bucket/run"):
        pass
    assert "object store, where no lock is possible" in caplog.records[0].getMessage()


def test_the_lock_holder_is_process_0_of_the_launch(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert files.launch_rank() == 3 and files.launch_rank(process_id=0) == 0
    assert cli._lock(["x", "--workdir", "/w", "--process_id=1"]).rank == 1
    assert cli._lock(["x", "--workdir=/w", "--dry_run"]).workdir is None


# -- disk errors, corrupt model files, empty eval input ------------------------------------------


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing_half_written(
    tmp_path, monkeypatch, capsys
):
    """ENOSPC in the middle of a write, through the command line (a stage that writes its
    summary like every stage does, via r1jax.files)."""
    target = tmp_path / "eval.json"
    target.write_text('{"old": 1}\n')

    def full(self, text, encoding=None):  # half the bytes reach the disk, then it is full
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(type(epath.Path("/")), "write_text", full)
    stage = lambda c, wd: files.write_json(target, {"new": 2})  # noqa: E731
    monkeypatch.setattr(cli, "_stage", lambda command, check=False: stage)
    code, err = _cli(monkeypatch, capsys, "eval", "--config=eval", f"--workdir={tmp_path}")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert re.fullmatch(
        rf"eval: {tmp_path}/\.eval\.json\.\w+\.tmp: No space left on device \(ENOSPC\)\n", err
    )
    assert target.read_text() == '{"old": 1}\n'  # the old file, whole
    assert sorted(os.listdir(tmp_path)) == ["eval.json", "r1jax.lock"]  # no temporary file
    assert (tmp_path / "r1jax.lock").read_text() == ""  # the lock released


def test_other_disk_errors_found_behind_a_library_wrapper():
    try:
        try:
            raise PermissionError(errno.EROFS, "Read-only file system", "/ckpt/4/state")
        except OSError as inner:
            raise RuntimeError("orbax: save failed") from inner
    except RuntimeError as e:
        assert cli.describe_io_error(cli.io_error(e)) == (
            "/ckpt/4/state: Read-only file system (EROFS)"
        )
    assert cli.io_error(ValueError("not a disk error")) is None


def _safetensors(path):
    header, _ = hf.safetensors_header({"a": ("F32", (4, 4)), "b": ("F32", (2,))})
    path.write_bytes(header + np.zeros(18, np.float32).tobytes())
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:-8], r"model.safetensors: tensor '\w' needs bytes \d+\.\.\d+ of a"),
        (lambda raw: raw[:100] if len(raw) > 100 else raw[:9], r"model.safetensors: header of"),
        (lambda raw: raw[:8] + b"\xff" * (len(raw) - 8), r"model.safetensors: the safetensors"),
    ],
)
def test_a_truncated_or_corrupt_safetensors_file_is_named(tmp_path, damage, message):
    f = _safetensors(tmp_path / "model.safetensors")
    assert set(hf.read_index(str(tmp_path))) == {"a", "b"}  # whole: reads
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(FileError, match=message):
        hf.read_index(str(tmp_path))


def test_a_truncated_orbax_model_is_one_line_naming_its_params(tmp_path):
    cfg = get_preset("tiny", d_model=16, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=16,
                     d_ff=16, vocab_size=32)  # fmt: skip
    store.save_model(tmp_path / "m", init_params(cfg, jax.random.key(0)), cfg)
    for f in (tmp_path / "m" / "params").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])
    with pytest.raises(FileError, match=rf"^{tmp_path}/m/params: unreadable parameters \("):
        store.load_model(str(tmp_path / "m"))


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xff\xfe\x00garbage"])
def test_an_empty_or_unreadable_eval_file_is_an_error(tmp_path, content):
    data = tmp_path / "math500.jsonl"
    data.write_bytes(content)
    c = configs.load("eval:benchmark=math500")
    c.data.path = str(data)
    with pytest.raises(DataError, match=f"^config.data: {data}"):
        evaluate.run(c, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "eval.json").exists()
