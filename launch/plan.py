"""Memory per device for a GRPO config on a target machine, and the mesh to use.

  python launch/plan.py --config=configs/r1zero.py:model=DIR --target=v5p-64 --target=h100x8
  python launch/plan.py --model=qwen2.5-32b --target=v5p-128

Computed from abstract shapes (nothing is allocated): parameters, optimizer state, gradients,
reference model, the sampler's KV cache and the activations of one micro-batch.
"""

from r1jax import tools

if __name__ == "__main__":
    tools.plan()
