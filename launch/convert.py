"""Convert between a Hugging Face model directory and an r1jax (orbax) model directory.

python launch/convert.py --src=HF_DIR --dst=R1JAX_DIR            # HF -> r1jax
python launch/convert.py --src=R1JAX_DIR --dst=HF_DIR --to=hf    # r1jax -> HF
"""

import argparse

from r1jax.checkpoint import load_model, save_model, tokenizer_path
from r1jax.models.hf import save_hf


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--to", choices=("r1jax", "hf"), default="r1jax")
    p.add_argument("--dtype", default="float32", help="parameter dtype to store")
    a = p.parse_args(argv)
    cfg, params = load_model(a.src, param_dtype=a.dtype)
    tok = tokenizer_path(a.src)
    if a.to == "hf":
        save_hf(params, cfg, a.dst, dtype=a.dtype, tokenizer_dir=tok)
    else:
        save_model(a.dst, params, cfg, tokenizer_dir=tok)
    print(f"wrote {a.to} checkpoint to {a.dst}")


if __name__ == "__main__":
    main()
