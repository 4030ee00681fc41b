"""Logit-distillation entry point (the logic is in r1jax/distill.py).

python launch/distill.py --config=configs/distill.py:student=S,teacher=T,data=F --workdir=/tmp/d

Trace distillation (R1's way) is rejection sampling then SFT: launch/rejection_sample.py, then
launch/sft.py on its output (see configs/rejection.py).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import distill

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, model)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    distill.train_distill(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
