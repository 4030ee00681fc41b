"""Rejection sampling entry point (the logic is in r1jax/rejection.py).

python launch/rejection_sample.py --config=configs/rejection.py --workdir=/tmp/rejection
"""

import json

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import rejection

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (dataset and statistics)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    stats = rejection.rejection_sample(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({k: stats[k] for k in ("sampled", "kept", "dropped", "output")}, indent=2))


if __name__ == "__main__":
    app.run(main)
