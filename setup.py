"""r1jax: DeepSeek-R1 training (GRPO, SFT, distillation, evaluation) in pure JAX."""

import setuptools

CORE = [
    "jax>=0.7",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    # One path layer for every file written: local directories and gs:// buckets alike.
    "etils[epath]",
    "ml-collections>=1.0",
    "sentencepiece>=0.2",
    "tokenizers>=0.20",
    "safetensors>=0.4",
    "numpy",
    "sympy>=1.12",
    # Answer equivalence: LaTeX parsing and sympy comparison (see r1jax/rewards/math.py).
    "math-verify>=0.7",
    "tensorflow-datasets>=4.9",
    "pyarrow",
    "tqdm",
    "tensorboardX",
    "matplotlib",
    "absl-py",
    "jinja2",
]

EXTRAS = {
    # Parity tests against transformers (PyTorch CPU). Install torch==2.13.0 first on CPU-only
    # machines, or pip pulls a multi-GB CUDA build.
    "test": [
        "pytest>=8",
        "pytest-xdist",
        "ruff",
        "transformers>=4.51",
        "torch",
        "nbclient",
        "nbformat",
        "ipykernel",
    ],
    # Side-by-side benchmarks against TRL.
    "bench": ["trl", "transformers>=4.51", "torch"],
    # Workdirs and checkpoints on Google Cloud Storage (gs://...) through etils.epath.
    "gcs": ["gcsfs"],
    # The TensorBoard viewer (the event files are written by tensorboardX, a core dependency).
    "tensorboard": ["tensorboard"],
    # Accelerators: Cloud TPU VMs and CUDA 12 GPUs.
    "tpu": ["jax[tpu]"],
    "cuda": ["jax[cuda12]"],
}

COMMANDS = ["train", "sft", "distill", "eval", "rejection", "reward_model", "pipeline", "sample"]
SCRIPTS = [
    f"r1jax-{c.replace('_', '-')}=r1jax.cli:{c if c != 'eval' else 'evaluate'}" for c in COMMANDS
]
SCRIPTS += [f"r1jax-{t}=r1jax.tools:{t}" for t in ("convert", "sweep", "plan")]
SCRIPTS += ["r1jax-plot=r1jax.plotting:main", "r1jax=r1jax.__main__:main"]

setuptools.setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 training system in pure JAX",
    packages=setuptools.find_packages(include=["r1jax", "r1jax.*"]),
    package_data={"r1jax": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": SCRIPTS},
)
