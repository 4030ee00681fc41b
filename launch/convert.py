"""Convert between a Hugging Face model directory and an r1jax (orbax) model directory.

python launch/convert.py --src=HF_DIR --dst=R1JAX_DIR            # HF -> r1jax
python launch/convert.py --src=R1JAX_DIR --dst=HF_DIR --to=hf    # r1jax -> HF
"""

from r1jax import tools

if __name__ == "__main__":
    tools.convert()
