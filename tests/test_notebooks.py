"""The colabs: committed without outputs, and run top to bottom in TINY mode with what they
display pinned against the files the run wrote.

Each notebook runs in a fresh python3 kernel whose working directory is a temp dir, with
R1JAX_NOTEBOOK_TINY=1, this checkout first on PYTHONPATH and a single CPU device (the fake
8-device flag of conftest.py is removed: a notebook user has no such flag).
"""

import base64
import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
COLABS = REPO / "colabs"
NOTEBOOKS = ["r1zero_quickstart.ipynb", "evaluate.ipynb"]
CELL_TIMEOUT_S = 240


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


def outputs(nb, marker: str) -> list:
    """The outputs of the one code cell whose source contains `marker`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells contain {marker!r}"
    return cells[0].outputs


def stdout(nb, marker: str) -> str:
    return "".join(o.text for o in outputs(nb, marker) if o.get("name") == "stdout")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = nbformat.read(COLABS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.colab.private_outputs is True
    assert nb.metadata.kernelspec.name == "python3"
    assert "Copyright" in nb.cells[0].source and nb.cells[0].cell_type == "markdown"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [(c.outputs, c.execution_count) for c in code] == [([], None)] * len(code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "TINY = False" in params[0].source
    assert "jax.devices()[0].platform" in code[0].source  # the runtime is detected first


def test_quickstart_trains_plots_and_shows_samples(tmp_path):
    nb = execute("r1zero_quickstart.ipynb", tmp_path)
    run = tmp_path / "r1zero_tiny"
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 4
    assert config["model"]["init"] == str(tmp_path / "tiny_base" / "model")

    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in rows if "eval/pass@1" in r] == [0, 2, 4]
    keys = ("train/reward", "train/accuracy", "train/completion_len", "eval/pass@1")
    assert stdout(nb, "Trainer(config, WORKDIR)") == "".join(
        f"{k:22s} {rows[-1][k]}\n" for k in keys
    )

    # The figure shown inline is the PNG launch/plot.py wrote.
    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    shown = [o for o in outputs(nb, "plot(WORKDIR") if "image/png" in o.get("data", {})]
    assert [base64.b64decode(o.data["image/png"]) for o in shown] == [png]

    samples, evals = read_jsonl(run / "samples.jsonl"), read_jsonl(run / "eval_samples.jsonl")
    assert {r["step"] for r in samples} == {2, 4} and {r["step"] for r in evals} == {0, 2, 4}
    want = [
        f"step {r['step']}, reward {r['reward']:.2f}: {r['completion']!r}" for r in samples[-2:]
    ]
    want += [
        f"eval at step {r['step']}, correct={r['correct']}: {r['completion']!r}" for r in evals[-2:]
    ]
    assert stdout(nb, "read_jsonl(") == "".join(line + "\n" for line in want)
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
    assert (meta["temperature"], meta["top_p"], meta["max_new_tokens"]) == (0.6, 0.95, 16)
    assert (meta["template"], meta["chat_template"]) == ("r1_eval", "chatml")

    samples = read_jsonl(run / "eval_samples.jsonl")
    assert [(r["index"], r["sample"]) for r in samples] == [
        (q, j) for q in range(3) for j in (0, 1)
    ]
    assert summary["pass@1"] == sum(r["correct"] for r in samples) / 6
    assert all(r["length"] <= 16 for r in samples)
    shown = dict(line.split(maxsplit=1) for line in stdout(nb, "eval.json").splitlines())
    assert set(shown) == {
        "pass@1",
        "pass@2",
        "cons@2",
        "pass@1_stderr",
        "completion_len",
        "truncated_frac",
    }
    assert {k: float(v) for k, v in shown.items()} == {k: summary[k] for k in shown}
