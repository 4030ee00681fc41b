"""Reward-model training entry point (the logic is in r1jax/reward_model.py).

python launch/reward_model.py --workdir=/tmp/rm \\
    --config=configs/reward_model.py:model=DIR,data=PAIRS
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import reward_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, model)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    reward_model.train_reward_model(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
