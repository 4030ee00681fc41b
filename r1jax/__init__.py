"""r1jax: the DeepSeek-R1 training system (GRPO, SFT, distillation, evaluation) in pure JAX."""

__version__ = "0.1.0"
