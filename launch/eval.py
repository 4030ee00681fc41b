"""Evaluation entry point; the logic lives in r1jax/eval_run.py (importable from notebooks).

python launch/eval.py --config=configs/eval.py --workdir=/tmp/eval_sumchain
python launch/eval.py --config=configs/eval.py:model=DIR,benchmark=gsm8k --workdir=/tmp/eval_gsm8k

Writes WORKDIR/eval_samples.jsonl (per sample), eval.json (summary), eval_meta.json; run the same
command again to resume an interrupted evaluation.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import eval as eval_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (resumed if it has samples)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    summary = eval_lib.run(_CONFIG.value, _WORKDIR.value)
    skip = ("config", "model")
    print(
        {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items() if k not in skip}
    )


if __name__ == "__main__":
    app.run(main)
