"""r1jax: DeepSeek-R1 training (GRPO, SFT, distillation, evaluation) in pure JAX."""

import setuptools

CORE = [
    "jax>=0.7",
    "flax>=0.10",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
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
}

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
)
