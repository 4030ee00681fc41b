"""Code reward: program extraction, test parsing, pass fractions, sandbox layers (in-process).

The hostile programs run through the worker pool in test_rewards_pool.py.
"""

import os

import pytest

from r1jax.rewards.code import CodeReward, extract_program, parse_tests, run_sandboxed

DOUBLE = "print(int(input()) * 2)"
STDIN_TESTS = {"inputs": ["1", "2", "3"], "outputs": ["2", "4", "7"]}  # the last one is wrong


def _py(src: str) -> str:
    return f"<think>easy</think>\n```python\n{src}\n```"


def test_extract_program():
    assert extract_program("```python\na = 1\n```\ntext\n```python\nb = 2\n```") == "b = 2\n"
    assert extract_program("```py\nx\n```") == "x\n"
    assert extract_program("<answer>\n```\nprint(1)\n```\n</answer>") == "print(1)\n"
    assert extract_program("<answer>print(2)</answer>") == "print(2)"
    assert extract_program("```bash\nls\n```") is None
    assert extract_program("no code") is None


def test_parse_tests_forms():
    pairs = (("1", "2"), ("3", "4"))
    assert parse_tests({"inputs": ["1", "3"], "outputs": ["2", "4"]}).cases == pairs
    assert (
        parse_tests([{"input": "1", "output": "2"}, {"input": "3", "output": "4"}]).cases == pairs
    )
    assert parse_tests('{"test_cases": [{"input": "1", "output": "2"}]}').cases == (("1", "2"),)
    assert parse_tests([("1", "2"), ("3", "4")]).cases == pairs
    assert parse_tests({"input": "1", "output": "2"}).cases == (("1", "2"),)
    assert parse_tests({"inputs": ["1"], "outputs": ["2"], "fn_name": "f"}) is None
    spec = parse_tests("assert f(1) == 2\nx = 3\nassert f(x) == 4\ncheck(f)")
    assert (spec.cases, spec.n_asserts, spec.total) == ((), 3, 3)
    both = parse_tests({"inputs": ["1"], "outputs": ["2"], "asserts": "assert True"})
    assert both.total == 2
    assert parse_tests("assert (") is None  # syntax error in the tests
    assert parse_tests({"inputs": ["1"], "outputs": []}) is None
    assert parse_tests([]) is None
    assert parse_tests(None) is None


def test_pass_fraction_and_all_mode():
    fn = CodeReward(timeout_s=5.0)
    completions = [_py(DOUBLE), _py("print(int(input()) + 1)"), "no program", _py(DOUBLE)]
    tests = [STDIN_TESTS, STDIN_TESTS, STDIN_TESTS, "not json and not python ("]
    got = fn(["p"] * 4, completions, tests=tests, completion_lens=[1] * 4)
    assert got == [pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0, None]
    all_mode = CodeReward(mode="all", timeout_s=5.0)
    ok = {"inputs": ["1", "5"], "outputs": ["2", "10\n"]}
    assert all_mode(["p"] * 2, [_py(DOUBLE)] * 2, tests=[ok, STDIN_TESTS]) == [1.0, 0.0]


def test_assert_style_tests():
    program = "def add(a, b):\n    return a + b if a < 10 else 0"
    tests = "\n".join(["assert add(1, 2) == 3", "assert add(10, 1) == 11", "assert add(2, 2) == 4"])
    tests += "\nassert add(3, 3) == 7"
    fn = CodeReward(timeout_s=5.0)
    assert fn(["p"], [_py(program)], tests=[tests]) == [0.5]
    # A crashing program fails every test; a `__main__` guard does not run under tests.
    assert fn(["p"], [_py("raise SystemExit(0)")], tests=[tests]) == [0.0]
    guarded = program + "\nif __name__ == '__main__':\n    print(input())"
    assert fn(["p"], [_py(guarded)], tests=[tests]) == [0.5]


def test_bad_options_raise():
    with pytest.raises(ValueError, match="mode"):
        CodeReward(mode="best")
    with pytest.raises(ValueError, match="positive"):
        CodeReward(timeout_s=0)
    with pytest.raises(ValueError, match="'tests'"):
        CodeReward()(["p"], ["x"])


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop needs root")
def test_sandbox_runs_as_nobody_in_a_private_writable_work_dir():
    # Our interpreter may live under /root, which `nobody` cannot read: the sandbox then picks a
    # world-readable python3 (resolve_python) instead of skipping the drop.
    program = (
        "import os\nopen(os.path.join(os.getcwd(), 'f'), 'w').write('x')\n"  # absolute path
        "print(os.getuid(), os.getgid(), open('f').read())"
    )
    res = run_sandboxed(program)
    assert (res.returncode, res.stdout) == (0, "65534 65534 x\n")
    assert res.isolation["uid"] == 1 and res.missing == {}
    assert res.caps_hit == () and res.wall_s > 0 and res.max_rss_mb > 0


def test_sandbox_reports_the_caps_it_hit():
    loop = run_sandboxed("while True:\n    pass", timeout_s=0.5)
    assert loop.timed_out or loop.returncode != 0
    assert "time" in loop.caps_hit
    hog = run_sandboxed("x = bytearray(1 << 30)", memory_mb=128)
    assert hog.returncode != 0 and "memory" in hog.caps_hit
    flood = run_sandboxed("while True:\n    print('x' * 1000)", max_output_bytes=1 << 14)
    assert "output" in flood.caps_hit and len(flood.stdout) == 1 << 14


def test_a_python_nobody_cannot_run_is_an_error_naming_the_field(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root drops privileges")
    private = tmp_path / "python3"  # under a 0700 pytest dir: not readable by `nobody`
    private.write_text("#!/bin/sh\n")
    private.chmod(0o755)
    tmp_path.chmod(0o700)
    with pytest.raises(ValueError, match="python="):
        CodeReward(python=str(private))


def test_assert_tests_are_judged_outside_against_the_programs_functions():
    # HumanEval style (check(candidate)), MBPP style (a module imported by the program, sets),
    # in-place mutation copied back, generators as lists, the program's exceptions by type.
    program = (
        "import math\nfrom typing import List\nSCALE = 2\n"
        "def f(xs: List[int]) -> List[int]:\n    return [SCALE * x for x in xs]\n"
        "def sort_in_place(a):\n    a.sort()\n"
        "def evens(n):\n    return (i for i in range(n) if i % 2 == 0)\n"
        "def root(x):\n    if x < 0:\n        raise ValueError('negative')\n"
        "    return math.sqrt(x)\n"
    )
    tests = (
        "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n"
        "    assert candidate([]) == []\ncheck(f)\n"
        "a = [3, 1, 2]\nsort_in_place(a)\nassert a == [1, 2, 3]\n"
        "assert list(evens(5)) == [0, 2, 4]\n"
        "assert math.isclose(root(2.0), 2 ** 0.5) and SCALE == 2\n"
        "assert set(f([1, 1])) == {2}\n"
        "try:\n    root(-1)\n    raised = False\nexcept ValueError:\n    raised = True\n"
        "assert raised\nassert f([1]) == [3]"
    )
    res = run_sandboxed(program, test_code=tests)
    assert res.passed_asserts == 7  # of 8 (bare calls count): all but the last, which is wrong
    assert CodeReward()(["p"], [_py(program)], tests=[tests]) == [pytest.approx(7 / 8)]


def test_sandbox_counts_reach_the_reward_metrics_through_the_worker_pool():
    # The sandbox runs inside a pool worker; its caps and calls must come back per label.
    from r1jax.rewards import RewardStack

    stack = RewardStack([("code", 1.0, {"timeout_s": 0.5, "total_timeout_s": 1.0})])
    loop = "```python\nwhile True:\n    pass\n```"
    echo = "```python\nprint(input())\n```"
    tests = {"inputs": ["7\n"], "outputs": ["7"]}
    res = stack(["q", "q"], [loop, echo], {"tests": [tests, tests]})
    assert res.per_fn["code"].tolist() == [0.0, 1.0]
    assert res.counters["code/sandbox/calls"] == 2
    assert res.counters["code/sandbox/time_cap"] == 1
    assert res.counters["code/sandbox/memory_cap"] == res.counters["code/sandbox/output_cap"] == 0
