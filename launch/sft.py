"""Supervised fine-tuning / pretraining entry point (the logic is in r1jax/sft.py).

python launch/sft.py --config=configs/pretrain.py --workdir=/tmp/pretrain
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import sft

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, model)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    sft.train_sft(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
