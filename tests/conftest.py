"""Tests run on the CPU with 8 fake devices so that sharding is exercised.

The flags must be set before JAX initialises its backend, hence here, at import time.
"""

import os

# LLVM optimisation level 0: XLA:CPU compiles the tests' many small programs 2-4x faster, and
# the tiny shapes they run make slower code irrelevant; compute-heavy tests that run the real
# job (test_embedded_default) start it in a subprocess at the default level (FAST_RUN_ENV).
NO_LLVM_OPT = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {NO_LLVM_OPT}"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
