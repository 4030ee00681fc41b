"""Sample completions from a checkpoint (an r1jax model directory or a Hugging Face one).

  python launch/sample.py --checkpoint=DIR --prompt="1+1=" --max_new_tokens=32 --temperature=0

Prints each completion; --output=FILE also writes JSON lines {prompt, completion, token_ids}.
"""

import argparse
import json

from r1jax import sampling
from r1jax.checkpoint import load_model, tokenizer_path
from r1jax.data import templates
from r1jax.tokenizer import load_tokenizer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("--template", default="plain", help="prompt template, e.g. plain, r1zero")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0, help="0 means greedy")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="write JSON lines here")
    a = p.parse_args(argv)

    cfg, params = load_model(a.checkpoint)
    tok_dir = tokenizer_path(a.checkpoint)
    if tok_dir is None:
        raise SystemExit(f"--checkpoint={a.checkpoint}: no tokenizer files in the directory")
    tokenizer = load_tokenizer(tok_dir)
    template = templates.get_template(a.template)
    prompts = [template({"question": q}) for q in a.prompt]
    s = sampling.SamplingConfig(
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        top_p=a.top_p,
        top_k=a.top_k,
        eos_ids=tuple(tokenizer.eos_ids),
        pad_id=tokenizer.pad_id,
    )
    rows = sampling.sample_texts(params, cfg, tokenizer, prompts, s, a.num_samples, a.seed)
    out = open(a.output, "w") if a.output else None
    for row in rows:
        print(f"--- {row['prompt']!r}\n{row['completion']}")
        if out:
            out.write(json.dumps(row) + "\n")
    if out:
        out.close()


if __name__ == "__main__":
    main()
