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


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root and python3"
)
def test_sandbox_drops_to_nobody_with_a_world_readable_python():
    # Our interpreter may live under /root, which `nobody` cannot read; the sandbox then keeps
    # the uid (other layers still apply). The system python shows the drop itself works.
    program = (
        "import os\nopen(os.path.join(os.getcwd(), 'f'), 'w').write('x')\n"  # absolute path
        "print(os.getuid(), os.getgid(), open('f').read())"
    )
    res = run_sandboxed(program, python="/usr/bin/python3")
    if not (res.isolation or {}).get("nobody"):
        pytest.skip("the standard library is not readable by nobody here")
    assert (res.returncode, res.stdout) == (0, "65534 65534 x\n")
