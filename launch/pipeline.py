"""The four-stage R1 pipeline; the logic lives in r1jax/pipeline.py.

  python launch/pipeline.py --config=configs/r1.py --workdir=/tmp/r1
Rerun the same command to resume: finished stages are skipped, an interrupted one resumes.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file[:args]")
_WORKDIR = flags.DEFINE_string("workdir", None, "pipeline directory (one sub-directory a stage)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    results = pipeline.run_pipeline(_CONFIG.value, _WORKDIR.value)
    for stage, summary in results.items():
        print(f"{stage:>16}: pass@1 {summary['pass@1']:.3f}  len {summary['completion_len']:.1f}")


if __name__ == "__main__":
    app.run(main)
