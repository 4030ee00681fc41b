"""Worker pool (hard timeouts, crashes, exceptions), hostile code through the pool, RewardStack.

One pool of 2 workers serves the whole module. Helper reward functions below are loaded in the
workers by "module:function" name, exactly as user functions would be.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import pytest

from r1jax.rewards import RewardPool, RewardSpec, RewardStack, Task, get_reward_fn
from r1jax.rewards.pool import IN_PROCESS, Outcome

HERE = __name__


def hang(prompts, completions, **fields):
    time.sleep(3600)


def boom(prompts, completions, **fields):
    raise RuntimeError("boom")


def die(prompts, completions, **fields):
    os._exit(3)


def length(prompts, completions, *, scale=1.0, **fields):
    return [scale * len(c) for c in completions]


def maybe_none(prompts, completions, **fields):
    return [None if c == "?" else 1.0 for c in completions]


@pytest.fixture(scope="module")
def pool():
    with RewardPool(2, timeout_s=10.0) as p:
        yield p


def _task(name, completion="abc", timeout_s=None, **kwargs):
    return Task(name, "prompt", completion, {"completion_lens": 3}, kwargs, timeout_s)


def test_pool_timeout_exception_crash_then_recovers(pool):
    before = dict(pool.counters)
    tasks = [
        _task(f"{HERE}:length"),
        _task(f"{HERE}:hang", timeout_s=1.0),
        _task(f"{HERE}:boom"),
        _task(f"{HERE}:die"),
        _task(f"{HERE}:length", "abcdef", scale=0.5),
    ]
    assert pool.run(tasks) == [
        Outcome(3.0, "ok"),
        Outcome(0.0, "timeout"),
        Outcome(0.0, "exception"),
        Outcome(0.0, "crash"),
        Outcome(3.0, "ok"),
    ]
    delta = {k: pool.counters[k] - before.get(k, 0) for k in pool.counters}
    assert delta == dict(items=5, timeouts=1, exceptions=1, none_values=0, crashes=1, restarts=2)
    # the next call is served normally, through the async path too
    assert pool.map("format", ["", ""], ["<think>a</think><answer>b</answer>", "x"]) == [1.0, 0.0]
    fut = pool.submit([_task(f"{HERE}:maybe_none", "?"), _task(f"{HERE}:maybe_none", "!")])
    assert fut.result(timeout=30) == [Outcome(None, "ok"), Outcome(1.0, "ok")]
    assert pool.counters["none_values"] - before["none_values"] == 1


def test_pool_values_are_configurable():
    with RewardPool(1, timeout_s=1.0, timeout_value=None, exception_value=-1.0) as p:
        got = p.run([_task(f"{HERE}:hang"), _task(f"{HERE}:boom"), _task(f"{HERE}:length")])
        assert got == [Outcome(None, "timeout"), Outcome(-1.0, "exception"), Outcome(3.0, "ok")]
        assert (p.counters["timeouts"], p.counters["none_values"]) == (1, 1)


def pid(prompts, completions, **fields):
    return [float(os.getpid())] * len(completions)


pid_in_process = pid  # the same function under a name the pool runs in-process


def test_only_named_model_rewards_run_in_process():
    assert "reward_model" in IN_PROCESS
    with RewardPool(1, in_process={f"{HERE}:pid_in_process", f"{HERE}:boom"}) as p:
        got = p.run([_task(f"{HERE}:pid"), _task(f"{HERE}:pid_in_process"), _task(f"{HERE}:boom")])
        assert got[1:] == [Outcome(os.getpid(), "ok"), Outcome(0.0, "exception")]
        assert got[0].status == "ok" and got[0].value != os.getpid()  # a worker's pid
        assert p.counters["exceptions"] == 1
    with pytest.raises(RuntimeError, match="closed"):
        p.run([_task(f"{HERE}:pid_in_process")])


def test_hostile_programs_are_contained_and_the_pool_goes_on(pool, tmp_path):
    escape = f"/tmp/r1jax-escape-{uuid.uuid4().hex}"
    victim = tmp_path / "victim"
    victim.mkdir()
    server = socket.socket()  # a live local server the program would reach without a netns
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    programs = {
        "infinite loop": "while True:\n    pass",
        "fork storm": (
            "import os, time\nfor _ in range(50):\n    if os.fork() == 0:\n"
            "        time.sleep(30)\n        os._exit(0)\nprint('escaped')"
        ),
        "subprocess": "import subprocess\nsubprocess.run(['true'])\nprint('escaped')",
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)\n"
        "print('escaped')",
        "write outside": f"open({escape!r}, 'w').write('x')\nprint('escaped')",
        "delete outside": f"import shutil\nshutil.rmtree({str(victim)!r})\nprint('escaped')",
        "memory hog": "x = bytearray(4 * 1024**3)\nprint('escaped')",
        "output flood": "while True:\n    print('x' * 10000)",
    }
    kwargs = dict(timeout_s=1.0, memory_mb=256, max_output_bytes=1 << 16)
    tests = [{"input": "", "output": "escaped"}]
    before = dict(pool.counters)
    t0 = time.monotonic()
    got = pool.map(
        "code",
        [""] * len(programs),
        [f"```python\n{p}\n```" for p in programs.values()],
        kwargs=kwargs,
        tests=[tests] * len(programs),
    )
    assert dict(zip(programs, got)) == dict.fromkeys(programs, 0.0)
    assert time.monotonic() - t0 < 20  # the sandbox timed out the loop, not the pool
    assert not os.path.exists(escape)
    assert victim.is_dir()
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody connected
    server.close()
    assert pool.counters["timeouts"] == before["timeouts"]
    assert pool.counters["restarts"] == before["restarts"]
    # The same pool serves the next item, a correct program.
    ok = pool.map(
        "code",
        [""],
        ["```python\nprint(int(input()) * 2)\n```"],
        kwargs=kwargs,
        tests=[{"inputs": ["21"], "outputs": ["42"]}],
    )
    assert ok == [1.0]


def _stack_inputs():
    prompts = ["p"] * 3
    completions = [
        r"<think>x</think> <answer>\boxed{\frac{1}{2}}</answer>",
        r"<think>x</think> <answer>\boxed{3}</answer>",
        r"\boxed{2}",
    ]
    fields = {"answer": ["0.5", "4", "???"], "completion_lens": [10, 19, 20], "truncated": [0] * 3}
    return prompts, completions, fields


def test_reward_stack_values():
    specs = [
        ("math", 1.0),
        RewardSpec("format", 0.5),
        {"name": "overlong", "weight": 1.0, "kwargs": {"max_len": 20, "cache_len": 4}},
        ("language", 0.0),  # logged only: not in the total
    ]
    stack = RewardStack(specs)
    res = stack(*_stack_inputs())
    np.testing.assert_array_equal(res.per_fn["math"], np.array([1, 0, np.nan], np.float32))
    np.testing.assert_array_equal(res.per_fn["format"], [1, 1, 0])
    np.testing.assert_array_equal(res.per_fn["overlong"], [0, -0.75, -1])
    np.testing.assert_array_equal(res.per_fn["language"], [1, 1, 1])  # "boxed" is English
    np.testing.assert_array_equal(res.total, np.array([1.5, -0.25, np.nan], np.float32))
    assert res.total.dtype == np.float32
    np.testing.assert_array_equal(res.correct, [True, False, False])
    assert (res.counters["none"], res.counters["math/none"], res.counters["timeouts"]) == (1, 1, 0)
    assert res.metrics()["rewards/math/frac_judged"] == pytest.approx(2 / 3)
    weighted = RewardStack(specs, weights={"format": 2.0})
    np.testing.assert_array_equal(weighted(*_stack_inputs()).total[:2], [3.0, 1.25])


def test_reward_stack_through_pool_async(pool):
    hung = RewardSpec(f"{HERE}:hang", 1.0, timeout_s=1.0)
    stack = RewardStack(
        [("math", 1.0), hung, RewardSpec(f"{HERE}:length", 0.0, label="len")], pool=pool
    )
    fut = stack.submit(*_stack_inputs())
    res = fut.result(timeout=60)
    np.testing.assert_array_equal(res.total, np.array([1, 0, np.nan], np.float32))
    assert res.counters[f"{HERE}:hang/timeouts"] == 3
    np.testing.assert_array_equal(res.per_fn["len"], [53, 43, 9])


def test_reward_stack_errors():
    with pytest.raises(ValueError, match="unknown reward 'mathh'"):
        RewardStack([("mathh", 1.0)])
    with pytest.raises(ValueError, match="weight given for reward 'format'"):
        RewardStack([("math", 1.0)], weights={"format": 1.0})
    with pytest.raises(TypeError, match="no option"):
        RewardStack([("math", 1.0, {"last_number_fallbak": True})])
    with pytest.raises(TypeError, match="needs option"):
        RewardStack([("math", 1.0), (f"{HERE}:needs_opt", 1.0)])
    with pytest.raises(ValueError, match="unique"):
        RewardStack(["format", "format"])
    with pytest.raises(ValueError, match="several accuracy"):
        RewardStack(["math", "countdown"])
    with pytest.raises(ValueError, match="field 'answer'"):
        RewardStack(["math"])(["p", "p"], ["a", "b"], answer=["1"])
    stack = RewardStack(["math", "countdown"], correctness="countdown", correct_threshold=0.1)
    res = stack(["p"], ["<answer>1 + 2</answer>"], answer=["5"], nums=[[1, 2]], target=[4])
    assert res.correct.tolist() == [True]  # countdown's format score 0.1 passes threshold 0.1


def needs_opt(prompts, completions, *, level, **fields):
    return [float(level)] * len(completions)


def test_registry_names_and_user_functions():
    assert get_reward_fn("math_dapo")(["p"], [r"\boxed{1}"], answer=["2"]) == [-1.0]
    assert get_reward_fn("format_lenient")(["p"], ["x<think>a</think><answer>b</answer>"]) == [1.0]
    assert get_reward_fn(f"{HERE}:needs_opt", level=2)(["p"], ["c"]) == [2.0]
    with pytest.raises(TypeError, match="reward 'overlong'.*max_len"):
        get_reward_fn("overlong")
    with pytest.raises(ValueError, match="cannot load"):
        get_reward_fn("no_such_module_xyz:fn")


def test_workers_that_cannot_start_raise(monkeypatch):
    import r1jax.rewards.workers as workers_mod

    monkeypatch.setattr(workers_mod, "_BOOT", "import sys; sys.exit(1)")
    with RewardPool(1) as p:
        with pytest.raises(RuntimeError, match="before they start"):
            p.run([_task(f"{HERE}:length")])
        assert p.counters["start_failures"] == 3


# ---------------------------------------------------------------- faults under the default pool

TOWER = r"\boxed{9^{9^{9^{9^{9}}}}}"  # sympy would expand it: a C-level hang, no signal stops it


def segfault(prompts, completions, **fields):
    import ctypes

    ctypes.string_at(0)


def test_default_pool_times_out_a_hanging_answer():
    with RewardPool(0, timeout_s=1.0) as p:  # 0: the embedded default
        stack = RewardStack([("math", 1.0)], pool=p)
        assert stack(["p"], [r"\boxed{2}"], answer=["2"]).total.tolist() == [1.0]  # warm
        t0 = time.monotonic()
        res = stack(["p"], [TOWER], answer=["2"])
        assert time.monotonic() - t0 < 1.0 + 5.0
        assert res.total.tolist() == [0.0]
        assert (res.counters["timeouts"], res.counters["math/timeouts"]) == (1, 1)
        assert res.metrics()["rewards/total/mean"] == 0.0
        # the run goes on: the next call is scored normally
        assert stack(["p"], [r"\boxed{4}"], answer=["4"]).total.tolist() == [1.0]
        assert (p.counters["timeouts"], p.counters["restarts"]) == (1, 1)


def test_default_pool_contains_crashing_rewards():
    with RewardPool(0) as p:
        tasks = [_task(f"{HERE}:die"), _task(f"{HERE}:segfault"), _task(f"{HERE}:boom")]
        got = p.run([*tasks, _task(f"{HERE}:length")])
        assert got == [
            Outcome(0.0, "crash"),
            Outcome(0.0, "crash"),
            Outcome(0.0, "exception"),
            Outcome(3.0, "ok"),
        ]
        assert (p.counters["crashes"], p.counters["exceptions"]) == (2, 1)
        stack = RewardStack([f"{HERE}:die", RewardSpec(f"{HERE}:length", 0.0, label="n")], pool=p)
        res = stack(["p"], ["abc"])
        assert (res.counters["crashes"], res.counters[f"{HERE}:die/crashes"]) == (1, 1)
        assert res.per_fn["n"].tolist() == [3.0]


def _worker_pids() -> list[int]:
    """Live child processes of this one that run a reward worker."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/cmdline", "rb") as f:
                worker = b"r1jax.rewards.workers" in f.read()
        except (OSError, ValueError):
            continue
        if ppid == os.getpid() and worker:
            pids.append(int(d))
    return pids


def _worker_dirs(tmp) -> list[str]:
    return sorted(n for n in os.listdir(tmp) if n.startswith("r1jax-reward-worker-"))


def test_stale_worker_dirs_removed_at_start_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = [f"r1jax-reward-worker-{gone.pid}-123-abc", f"r1jax-reward-worker-{os.getpid()}-1-abc"]
    other = "r1jax-reward-worker-abc_123"  # not this format: its owner is unknown, keep it
    for name in [*stale, other]:
        (tmp_path / name / "sandbox").mkdir(parents=True)  # the 2nd: this pid, reused
    with RewardPool(1) as live:  # a concurrent run: its workers' dirs must survive
        assert live.map(f"{HERE}:length", ["p"], ["ab"]) == [2.0]
        live_dirs = _worker_dirs(tmp_path)
        assert not set(stale) & set(live_dirs)
        assert len(live_dirs) == 2  # its worker's and `other`
        for name in stale:
            (tmp_path / name).mkdir()
        with RewardPool(1) as p:
            assert p.map(f"{HERE}:length", ["p"], ["abc"]) == [3.0]
            assert set(live_dirs) < set(_worker_dirs(tmp_path))
        assert not set(stale) & set(_worker_dirs(tmp_path))
    assert _worker_dirs(tmp_path) == [other]


def test_close_kills_a_busy_pool_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    others = set(_worker_pids())  # other tests' pools
    p = RewardPool(2, timeout_s=60.0)
    assert p.map(f"{HERE}:length", ["p"], ["ab"]) == [2.0]
    fut = p.submit([_task(f"{HERE}:hang"), _task(f"{HERE}:hang")])
    time.sleep(0.5)
    mine = set(_worker_pids()) - others
    assert len(mine) == 2 and len(_worker_dirs(tmp_path)) == 2
    t0 = time.monotonic()
    p.close()
    assert time.monotonic() - t0 < 5.0  # not the items' 60 s
    with pytest.raises(RuntimeError, match="closed"):
        fut.result(timeout=1)
    assert not mine & set(_worker_pids()) and _worker_dirs(tmp_path) == []


def test_exit_without_close_leaves_no_processes_or_dirs(tmp_path):
    script = (
        "from r1jax.rewards import RewardPool\n"
        "p = RewardPool(1)\n"
        f"print(int(p.map({HERE + ':pid'!r}, [''], [''])[0]), flush=True)\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    worker = int(out.stdout.split()[-1])
    assert not os.path.exists(f"/proc/{worker}")
    assert _worker_dirs(tmp_path) == []
