"""One config dialect: every shipped config loads with the arguments its docstring documents,
every field can be overridden from the command line (scalars, tuples, nested dicts, the mesh),
a mistyped key is a one-line error naming the nearest valid ones, and every `--config` example
in the README parses exactly as written."""

import pathlib
import re
import shlex

import pytest

from r1jax import cli, configs
from r1jax.configs import common
from r1jax.models.config import ModelConfig
from r1jax.stages import grpo

REPO = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in pathlib.Path(configs.DIR).glob("*.py") if p.stem[0] != "_")
SHIPPED.remove("common")


def documented_args(name: str) -> list[str]:
    """The ":args" of every `--config=configs/NAME.py:...` in the config's own docstring."""
    text = (pathlib.Path(configs.DIR) / f"{name}.py").read_text()
    return sorted(set(re.findall(rf"configs/{name}\.py:([\w=.,/\-]+)", text)))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_config_loads_with_its_documented_arguments(name):
    c = configs.load(name)
    for arg in documented_args(name):
        configs.load(f"{name}:{arg}")
    # One dialect: the same sections under the same names wherever they appear.
    for section, keys in [
        ("model", {"init", "preset", "cpu_fp32", "overrides"}),
        ("sampling", set(common.sampling())),
        ("optim", set(common.optim())),
        ("reward_pool", {"workers", "timeout_s"}),
    ]:
        if section in c:
            assert set(c[section]) == keys, (name, section)
    if "model" in c:  # every ModelConfig field is declared, so any can be overridden
        assert set(c.model.overrides) == {f for f in ModelConfig.__dataclass_fields__}


def test_typed_arguments_are_parsed_once():
    c = configs.load("eval:benchmark=gsm8k,k=2,greedy=false")
    assert c.sampling.num_samples == 2 and c.sampling.greedy is False
    assert configs.load("eval:greedy").sampling.num_samples == 1
    assert configs.load("sft:lr=0.001,epochs=3").optim.lr == 0.001
    with pytest.raises(ValueError, match="k='two': expected int"):
        configs.load("eval:k=two")
    with pytest.raises(ValueError, match="'modle' is unknown"):
        configs.load("r1zero:modle=x")


OVERRIDES = [  # (flag, dotted key, value it must give)
    ("--config.optim.lr=1e-6", "optim.lr", 1e-6),
    ("--config.rl.beta=0", "rl.beta", 0.0),
    ("--config.steps=7", "steps", 7),
    ("--config.sampling.stop=('</answer>',)", "sampling.stop", ("</answer>",)),
    ("--config.mesh=(('fsdp',4),('tensor',2))", "mesh", (("fsdp", 4), ("tensor", 2))),
    ("--config.rewards.format.weight=0.5", "rewards.format.weight", 0.5),
    ("--config.model.overrides.dtype=bfloat16", "model.overrides.dtype", "bfloat16"),
    ("--config.model.overrides.n_layers=2", "model.overrides.n_layers", 2),
    ("--config.model.cpu_fp32=false", "model.cpu_fp32", False),
    ("--config.rl.dual_clip=3.0", "rl.dual_clip", 3.0),
    ("--config.eval.sampling.num_samples=8", "eval.sampling.num_samples", 8),
    ("--config.data.kwargs={'test_size': 64}", "data.kwargs", {"test_size": 64}),
]


def _get(c, key):
    for k in key.split("."):
        c = c[k]
    return c


def test_a_table_of_overrides_applies_through_the_command_line():
    argv = ["train", "--config=configs/r1zero.py", "--workdir=/tmp/x"] + [
        f for f, _, _ in OVERRIDES
    ]
    c = cli.parse(argv).config
    for _, key, want in OVERRIDES:
        got = _get(c, key)
        got = got.to_dict() if hasattr(got, "to_dict") else got
        assert got == want, key
    assert _get(configs.load("r1zero"), "rewards.format.weight") == 1.0  # the file is untouched


def test_a_shipped_config_by_name_and_by_path_are_the_same():
    by_name = cli.parse(["train", "--config=r1zero:data=countdown", "--workdir=/tmp/x"]).config
    by_path = cli.parse(["train", "--config=configs/r1zero.py:data=countdown", "--dry_run"]).config
    assert by_name.to_json_best_effort() == by_path.to_json_best_effort()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.rl.betaa=0", "--config.rl.betaa: no such key in .*r1zero.py; did you mean rl.b"),
        ("--config.optim.lrr=1", "did you mean optim.lr"),
        ("--config.rewards.fromat.weight=1", "did you mean rewards.format.weight"),
    ],
)  # fmt: skip
def test_a_mistyped_key_is_one_line_naming_the_nearest(flag, message):
    with pytest.raises(SystemExit) as e:
        cli.parse(["train", "--config=configs/r1zero.py", "--workdir=/tmp/x", flag])
    assert re.search(message, str(e.value)) and "\n" not in str(e.value)


def readme_commands() -> list[list[str]]:
    """Every command of the README that passes --config (in code blocks and tables)."""
    text = (REPO / "README.md").read_text()
    found = re.findall(
        r"(?:python launch/(\w+)\.py|r1jax-(\w[\w-]*)) ([^`\n]*--config[^`\n]*)", text
    )
    out = []
    for launcher, script, rest in found:
        name = launcher or script
        if launcher and not (REPO / "launch" / f"{launcher}.py").exists():
            continue  # prose such as `python launch/NAME.py`
        command = {"rejection_sample": "rejection", "evaluate": "eval"}.get(name, name)
        out.append([command, *shlex.split(rest.replace("\\", " "))])
    return out


def test_readme_config_examples_parse_exactly_as_written():
    cmds = readme_commands()
    assert len(cmds) >= 10
    for command, *args in cmds:
        if command not in cli.COMMANDS:  # tools (sweep, plan) take a config file, not overrides
            assert any(a.startswith("--config=") for a in args)
            configs.path_of(next(a for a in args if a.startswith("--config="))[9:])
            continue
        fv = cli.parse([command, *args, "--dry_run"], command)
        if command == "train":
            grpo.validate(fv.config)
