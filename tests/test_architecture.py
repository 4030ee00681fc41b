"""The package's floors, checked on its import graph (README, "Architecture").

sharding < models < tokenizer < data < sampling < rewards < rl < update/loop/checkpoint/metrics
< stages < launch: a module imports only from its own floor or below; import strings (reward
registry entries, the command table) count as imports; no cycles; no stage imports another stage
except `pipeline`, which composes them; function-local imports only for optional heavy
dependencies, each with a comment saying so.
"""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "r1jax"

FLOORS = [  # lowest first: (floor name, module prefixes)
    ("base", ["r1jax", "r1jax.errors", "r1jax.files", "r1jax.distributed", "r1jax.sharding",
              "r1jax.registry"]),
    ("models", ["r1jax.models"]),
    ("tokenizer", ["r1jax.tokenizer", "r1jax.chat_template"]),
    ("data", ["r1jax.data"]),
    ("sampling", ["r1jax.sampling", "r1jax.continuous"]),
    ("rewards", ["r1jax.rewards", "r1jax.text_filters"]),
    ("rl", ["r1jax.rl"]),
    ("update/loop", ["r1jax.update", "r1jax.loop", "r1jax.checkpoint", "r1jax.metrics",
                     "r1jax.optim", "r1jax.rollout", "r1jax.evaluation", "r1jax.plan",
                     "r1jax.plotting"]),
    ("stages", ["r1jax.stages"]),
    ("launch", ["r1jax.configs", "r1jax.cli", "r1jax.tools", "r1jax.launchers", "r1jax.__main__"]),
]  # fmt: skip
HEAVY = {"torch", "transformers", "tensorflow_datasets", "tensorflow", "google"}
# Also allowed function-local (with a comment): TPU-only kernels, and the sandbox child's
# mode-specific imports (a script run by the sandbox's own interpreter, not a package module).
LOCAL_OK_PREFIXES = ("jax.experimental.pallas",)
LOCAL_OK_MODULES = {"r1jax.rewards._sandbox_child"}
MODULE_STRING = re.compile(r"^(r1jax(?:\.\w+)+)(?::\w+)?$")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise AssertionError(f"{module}: on no floor; add it to FLOORS in this test")
    return best[0]


def _resolve(name: str, modules: set[str]) -> str | None:
    """The r1jax module an import names (a `from pkg import mod` names the submodule)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: pathlib.Path, modules: set[str]):
    """(module-level imports, function-local imports [(name, line, has_comment)])."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    local_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    top, local = set(), []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = MODULE_STRING.match(node.value)
            if m and _resolve(m.group(1), modules):
                top.add(_resolve(m.group(1), modules))
            continue
        else:
            continue
        if id(node) in local_nodes:
            line = lines[node.lineno - 1]
            above = lines[node.lineno - 2] if node.lineno > 1 else ""
            local.append((names[0], node.lineno, "#" in line or above.strip().startswith("#")))
            continue
        for n in names:
            r = _resolve(n, modules) if n.startswith("r1jax") else None
            if r:
                top.add(r)
    return top, local


def package_graph():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, modules) for m, p in files.items()}, files


def violations(graph) -> list[str]:
    """Every broken rule of the graph {module: (imports, local imports)}."""
    out = []
    for m, (deps, local) in graph.items():
        for d in sorted(deps - {m}):
            if d.startswith(m + ".") or m == "r1jax":  # a package importing its own parts
                continue
            if floor_of(d) > floor_of(m):
                out.append(f"upward import: {m} ({FLOORS[floor_of(m)][0]}) -> {d} "
                           f"({FLOORS[floor_of(d)][0]})")  # fmt: skip
            stage = "r1jax.stages."
            if m.startswith(stage) and d.startswith(stage) and m != "r1jax.stages.pipeline":
                out.append(f"stage imports a stage: {m} -> {d}")
        for name, line, commented in local:
            ok = name.split(".")[0] in HEAVY or name.startswith(LOCAL_OK_PREFIXES)
            if not (ok or m in LOCAL_OK_MODULES):
                out.append(f"function-local import of {name} in {m}, line {line}")
            elif not commented:
                out.append(f"function-local import of {name} in {m}, line {line}: no comment")
    out += [f"cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return out


def cycles(graph) -> list[list[str]]:
    """Import cycles between modules (a package's __init__ importing its parts excluded)."""
    edges = {
        m: {d for d in deps if d != m and not d.startswith(m + ".") and m != "r1jax"}
        for m, (deps, _) in graph.items()
    }
    found, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(edges.get(m, ())):
            if state.get(d) == "open":
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return found


def test_the_package_keeps_its_floors():
    graph, _ = package_graph()
    assert len(graph) > 50
    assert violations(graph) == []


def test_every_stage_runs_on_the_one_loop_and_update_builder():
    graph, _ = package_graph()
    trainers = ["grpo", "sft", "distill", "reward_model"]
    for s in trainers:
        deps = graph[f"r1jax.stages.{s}"][0]
        assert {"r1jax.update", "r1jax.loop"} <= deps, s
    # Nothing but the builder calls jax.jit on a train step: no stage builds its own.
    for s in trainers:
        text = (PACKAGE / "stages" / f"{s}.py").read_text()
        assert "jax.jit(" not in text and "value_and_grad" not in text, s


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"r1jax.data.x": ({"r1jax.rl.losses"}, [])}, "upward import: r1jax.data.x (data)"),
        ({"r1jax.stages.sft": ({"r1jax.stages.grpo"}, [])}, "stage imports a stage"),
        ({"r1jax.loop": (set(), [("numpy", 3, True)])}, "function-local import of numpy"),
        ({"r1jax.loop": (set(), [("torch", 3, False)])}, "function-local import of torch"),
        (
            {"r1jax.rl.a": ({"r1jax.rl.b"}, []), "r1jax.rl.b": ({"r1jax.rl.a"}, [])},
            "cycle: r1jax.rl.a -> r1jax.rl.b -> r1jax.rl.a",
        ),
    ],
)
def test_the_checker_catches_each_kind_of_violation(graph, expected):
    assert any(v.startswith(expected) for v in violations(graph)), violations(graph)


def test_registry_strings_count_as_imports():
    graph, _ = package_graph()
    # The reward registry names its functions by import string: they are edges of the graph.
    assert "r1jax.rewards.reward_model" in graph["r1jax.rewards.registry"][0]
    assert "r1jax.stages.grpo" in graph["r1jax.cli"][0]
