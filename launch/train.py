"""GRPO training entry point; the logic lives in r1jax/train.py (importable from notebooks).

python launch/train.py --config=configs/r1zero.py --workdir=/tmp/r1zero
python launch/train.py --config=configs/r1zero.py:model=DIR,data=gsm8k --config.rl.beta=0
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, samples")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # our progress bar and metrics.jsonl tell the story
    last = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print({k: round(v, 4) for k, v in last.items() if k.startswith(("eval/", "train/acc"))})


if __name__ == "__main__":
    app.run(main)
