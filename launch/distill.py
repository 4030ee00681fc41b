"""Distillation entry point (r1jax/pipeline.py run_distillation; r1jax/distill.py for logits).

python launch/distill.py --config=configs/distill.py --workdir=/tmp/distill
python launch/distill.py --config=configs/distill.py:teacher=T,student=S,mode=logits ...
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, model)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    results = pipeline.run_distillation(_CONFIG.value, _WORKDIR.value)
    for name, summary in results.items():
        print(f"{name:>13}: pass@1 {summary['pass@1']:.3f}")


if __name__ == "__main__":
    app.run(main)
