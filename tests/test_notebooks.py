"""The colabs: committed with the outputs of a real (full, non-TINY) run, checked here; run top
to bottom in TINY mode with what they display pinned against the files the run wrote; and their
install cell (the GitHub URL parsing and each install branch) run as plain code.

Each notebook runs in a fresh python3 kernel whose working directory is a temp dir, with
R1JAX_NOTEBOOK_TINY=1, this checkout first on PYTHONPATH and a single CPU device (the fake
8-device flag of conftest.py is removed: a notebook user has no such flag).
"""

import ast
import base64
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
COLABS = REPO / "colabs"
NOTEBOOKS = ["r1zero_quickstart.ipynb", "evaluate.ipynb"]
CELL_TIMEOUT_S = 240
PNG = b"\x89PNG\r\n\x1a\n"


def kernel_env() -> dict:
    env = dict(os.environ, R1JAX_NOTEBOOK_TINY="1", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def execute(name: str, workdir: Path):
    nb = nbformat.read(COLABS / name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=kernel_env())  # raises CellExecutionError, with the traceback, on errors
    return nb


def committed(name: str):
    return nbformat.read(COLABS / name, as_version=4)


def code_cell(nb, marker: str):
    """The one code cell whose source contains `marker`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells contain {marker!r}"
    return cells[0]


def outputs(nb, marker: str) -> list:
    return code_cell(nb, marker).outputs


def stdout(nb, marker: str) -> str:
    return "".join(o.text for o in outputs(nb, marker) if o.get("name") == "stdout")


def images(nb, marker: str) -> list[bytes]:
    shown = [o for o in outputs(nb, marker) if "image/png" in o.get("data", {})]
    return [base64.b64decode(o.data["image/png"]) for o in shown]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the committed notebooks: the outputs of a full run ------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_with_the_outputs_of_one_clean_run(name):
    nb = committed(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert "Copyright" in nb.cells[0].source and nb.cells[0].cell_type == "markdown"
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Every code cell ran, once, top to bottom in one kernel.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "TINY = False" in params[0].source
    assert "jax.devices()[0].platform" in code[0].source  # the runtime is detected first
    assert stdout(nb, "# @title Install r1jax") == "r1jax imports already: nothing to install.\n"
    for cell in code:
        for o in cell.outputs:
            assert o.output_type != "error", (cell.source[:60], o.get("ename"), o.get("evalue"))
            text = o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
            assert not re.search(r"Traceback|Error\b|Exception\b", text), (cell.source[:60], text)


def test_committed_quickstart_is_the_full_run_and_learned():
    nb = committed("r1zero_quickstart.ipynb")
    assert stdout(nb, 'configs.load("r1zero")').splitlines()[:2] == [
        "model: embedded | data: sumchain | steps: 160",
        "rollout: 16 questions x 8 samples, 64 tokens",
    ]
    shown = stdout(nb, "GRPO(config, WORKDIR)").splitlines()
    by_step = ast.literal_eval(shown[0].removeprefix("held-out pass@1 by step: "))
    assert list(by_step) == list(range(0, 161, 20))  # the full schedule: not TINY
    final = dict(line.split(maxsplit=1) for line in shown[1:])
    assert set(final) == {"train/reward", "train/accuracy", "train/completion_len", "eval/pass@1"}
    assert round(float(final["eval/pass@1"]), 3) == by_step[160]
    assert by_step[0] < 0.5 < 0.6 < float(final["eval/pass@1"])  # base ~0.3; trained ~0.9
    # The curves, shown as the PNG r1jax.plotting wrote (10 x 7 inches at 100 dpi).
    [png] = images(nb, "plotting.plot(WORKDIR")
    assert png[:8] == PNG
    assert matplotlib.image.imread(io.BytesIO(png)).shape == (700, 1000, 4)
    lines = stdout(nb, "files.read_jsonl(").splitlines()
    assert [line.split(",")[0] for line in lines] == ["step 160"] * 2 + ["eval at step 160"] * 2


def test_committed_evaluate_is_the_default_run():
    nb = committed("evaluate.ipynb")
    assert stdout(nb, 'configs.load(f"eval:').splitlines() == [
        "sumchain: model embedded, template r1zero",
        "k=4, T=0.6, top-p=0.95, max new tokens 64",
    ]
    head, *rest = stdout(nb, "eval.json").splitlines()
    assert head == "128 questions x 4 samples (sumchain):"
    shown = {k: float(v) for k, v in (line.split(maxsplit=1) for line in rest)}
    keys = {"pass@1", "pass@2", "pass@4", "cons@4", "pass@1_stderr"}
    assert set(shown) == keys | {"completion_len", "truncated_frac"}
    assert 0.15 < shown["pass@1"] < 0.5  # the embedded base model: about 0.3
    assert shown["pass@1"] <= shown["pass@2"] <= shown["pass@4"] <= 1.0
    assert 0 < shown["pass@1_stderr"] < 0.1 and 0 < shown["completion_len"] <= 64
    # The same questions, seed and model as the quick start's step-0 evaluation: the same score.
    quick = stdout(committed("r1zero_quickstart.ipynb"), "GRPO(config, WORKDIR)").splitlines()[0]
    step0 = ast.literal_eval(quick.removeprefix("held-out pass@1 by step: "))[0]
    assert round(shown["pass@1"], 3) == step0


# -- the install cell, as plain code -------------------------------------------------------------


def install_source() -> str:
    sources = {code_cell(committed(n), "# @title Install r1jax").source for n in NOTEBOOKS}
    assert len(sources) == 1, "the notebooks' install cells differ"
    return sources.pop()


def github_source():
    """The cell's URL parser alone (with the cell's imports)."""
    body = ast.parse(install_source()).body
    keep = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
    keep += [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "github_source"]
    ns: dict = {}
    exec(compile(ast.Module(keep, []), "install-cell", "exec"), ns)
    return ns["github_source"]


@pytest.mark.parametrize(
    "url, want",
    [
        (
            "https://colab.research.google.com/github/acme/r1jax/blob/main/colabs/evaluate.ipynb",
            ("acme", "r1jax", "main"),
        ),
        (  # Colab adds a fragment (and sometimes a query); a branch may hold slashes
            "https://colab.research.google.com/github/a-b/r1.jax/blob/feat/plots/colabs/"
            "r1zero_quickstart.ipynb?authuser=1#scrollTo=x1",
            ("a-b", "r1.jax", "feat/plots"),
        ),
        (
            "https://colab.research.google.com/github/acme/r1jax/blob/feat%2Fx/colabs/e.ipynb",
            ("acme", "r1jax", "feat/x"),
        ),
        ("https://colab.research.google.com/drive/1AbCdEf", None),  # opened from Drive
        ("https://colab.research.google.com/notebook#fileId=xyz", None),  # an upload
        ("https://github.com/acme/r1jax/blob/main/colabs/evaluate.ipynb", None),
        ("https://colab.research.google.com/github/acme/r1jax/blob/main/other/x.ipynb", None),
        ("https://example.com/github/acme/r1jax/blob/main/colabs/x.ipynb", None),
        ("", None),
        (None, None),
    ],
)
def test_github_source_parses_the_colab_url(url, want):
    assert github_source()(url) == want


class Ran:
    """Stands in for subprocess.run: records the commands."""

    def __init__(self):
        self.commands = []

    def __call__(self, cmd, check):
        assert check is True
        self.commands.append(cmd)


@pytest.fixture
def not_installed(monkeypatch, tmp_path):
    """A session where r1jax does not import and pip is recorded, not run."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "r1jax" else real(n))
    monkeypatch.setattr(sys, "path", list(sys.path))
    ran = Ran()
    monkeypatch.setattr(subprocess, "run", ran)
    return ran


def run_install_cell(cwd: Path, monkeypatch, tpu: bool = False) -> dict:
    import jax

    monkeypatch.chdir(cwd)
    ns = {"jax": jax, "os": os, "TPU_HOST": tpu}
    exec(compile(install_source(), "install-cell", "exec"), ns)
    return ns


@pytest.mark.parametrize("tpu", [False, True])
def test_install_on_colab_from_github(not_installed, monkeypatch, tmp_path, capsys, tpu):
    page = "https://colab.research.google.com/github/acme/r1jax/blob/dev/colabs/evaluate.ipynb"
    asked = []
    output = types.SimpleNamespace(eval_js=lambda js, timeout_sec: asked.append(js) or page)
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(output=output))
    run_install_cell(tmp_path, monkeypatch, tpu)
    want = ["git+https://github.com/acme/r1jax@dev"] + (["jax[tpu]"] if tpu else [])
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert asked == ["window.location.href"]
    assert not_installed.commands == [pip + want]
    assert capsys.readouterr().out == f"pip install {' '.join(want)}\n"


def test_install_the_checkout_above(not_installed, monkeypatch, tmp_path, capsys):
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "colabs").mkdir()
    run_install_cell(tmp_path / "colabs", monkeypatch)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    assert not_installed.commands == [pip + ["-e", ".."]]
    assert sys.path[0] == str(tmp_path)
    assert capsys.readouterr().out == f"pip install -e {tmp_path}\n"


def test_install_elsewhere_says_what_to_do_and_stops(not_installed, monkeypatch, tmp_path, capsys):
    (tmp_path / "nb").mkdir()
    with pytest.raises(Exception) as stop:
        run_install_cell(tmp_path / "nb", monkeypatch)
    assert type(stop.value).__name__ == "StopHere" and stop.value._render_traceback_() == []
    assert not_installed.commands == []
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("r1jax is not installed: open this notebook")


# -- TINY runs in a fresh kernel -----------------------------------------------------------------


def test_quickstart_trains_plots_and_shows_samples(tmp_path):
    nb = execute("r1zero_quickstart.ipynb", tmp_path)
    run = tmp_path / "r1zero_tiny"
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 4
    assert config["model"]["init"] == str(tmp_path / "tiny_base" / "model")
    assert (config["sampling"]["num_prompts"], config["sampling"]["num_samples"]) == (4, 4)

    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in rows if "eval/pass@1" in r] == [0, 2, 4]
    keys = ("train/reward", "train/accuracy", "train/completion_len", "eval/pass@1")
    by_step = {r["step"]: round(r["eval/pass@1"], 3) for r in rows if "eval/pass@1" in r}
    assert stdout(nb, "GRPO(config, WORKDIR)") == f"held-out pass@1 by step: {by_step}\n" + "".join(
        f"{k:22s} {rows[-1][k]}\n" for k in keys
    )

    # The figure shown inline is the PNG r1jax.plotting wrote.
    png = (run / "curves.png").read_bytes()
    assert png[:8] == PNG
    assert images(nb, "plotting.plot(WORKDIR") == [png]

    samples, evals = read_jsonl(run / "samples.jsonl"), read_jsonl(run / "eval_samples.jsonl")
    assert {r["step"] for r in samples} == {2, 4} and {r["step"] for r in evals} == {0, 2, 4}
    want = [
        f"step {r['step']}, reward {r['reward']:.2f}: {r['completion']!r}" for r in samples[-2:]
    ]
    want += [
        f"eval at step {r['step']}, correct={r['correct']}: {r['completion']!r}" for r in evals[-2:]
    ]
    assert stdout(nb, "files.read_jsonl(") == "".join(line + "\n" for line in want)
    assert (run / "model" / "model_config.json").exists()  # the trained policy, for evaluate


def test_evaluate_scores_a_tiny_hf_checkpoint(tmp_path):
    nb = execute("evaluate.ipynb", tmp_path)
    assert (tmp_path / "tiny_hf" / "config.json").exists()
    assert (tmp_path / "tiny_hf" / "model.safetensors").exists()
    run = tmp_path / "eval_tiny"
    summary = json.loads((run / "eval.json").read_text())
    assert (summary["benchmark"], summary["k"], summary["num_questions"]) == ("gsm8k", 2, 3)
    assert (summary["num_samples"], summary["complete"]) == (6, True)
    meta = json.loads((run / "eval_meta.json").read_text())  # the protocol as it was run
    s = meta["sampling"]
    assert (s["temperature"], s["top_p"], s["max_new_tokens"], s["num_samples"]) == (
        0.6,
        0.95,
        16,
        2,
    )
    assert (meta["data"]["template"], meta["chat_template"]) == ("r1_eval", "chatml")
    assert meta["model_path"] == str(tmp_path / "tiny_hf")

    samples = read_jsonl(run / "eval_samples.jsonl")
    assert [(r["index"], r["sample"]) for r in samples] == [
        (q, j) for q in range(3) for j in (0, 1)
    ]
    assert summary["pass@1"] == sum(r["correct"] for r in samples) / 6
    assert all(r["length"] <= 16 for r in samples)
    head, *rest = stdout(nb, "eval.json").splitlines()
    assert head == "3 questions x 2 samples (gsm8k):"
    shown = dict(line.split(maxsplit=1) for line in rest)
    assert list(shown) == [
        "pass@1",
        "pass@2",
        "pass@1_stderr",
        "cons@2",
        "completion_len",
        "truncated_frac",
    ]
    assert {k: float(v) for k, v in shown.items()} == {k: summary[k] for k in shown}
    want = "".join(
        f"{r['id']}: answer={r['answer']!r}, correct={r['correct']}\n{r['completion'][-600:]}\n\n"
        for r in samples[0:4:2]
    )
    assert stdout(nb, "eval_samples.jsonl") == want
