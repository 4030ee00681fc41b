"""docs/hardening.md names a test for every fault it lists: each named test must exist, so a
row cannot outlive (or predate) the test that proves it. (docs/sandbox_escapes.md is generated
from the escape cases and checked by tests/test_sandbox_escapes.py.)"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _test_names() -> set[str]:
    names = set()
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_every_test_named_in_the_hardening_tables_exists():
    defined, named, rows = _test_names(), set(), 0
    for line in (ROOT / "docs" / "hardening.md").read_text().splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows += 1  # the last cell names the tests (file names, test_x.py, are not tests)
            named |= set(re.findall(r"\btest_\w+\b(?!\.py)", line.split("|")[-2]))
    assert rows > 40 and len(named) > 20  # the tables are there and name their tests
    assert sorted(named - defined) == []
