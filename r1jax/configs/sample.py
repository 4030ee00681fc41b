"""Sampling from a checkpoint (launch/sample.py): prompts in, completions out.

  python launch/sample.py --config=configs/sample.py:model=DIR \\
      --config.prompts='("1+1=",)' --config.sampling.greedy=true
No arguments: the shipped embedded base model on a sumchain question in the R1-Zero template,
4 samples at T=0.6. Prints the completions; with --workdir, also WORKDIR/samples.jsonl.
"""

from r1jax.configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, model=common.EMBEDDED)
    c = common.base()
    c.model = common.model(arg.model)
    c.tokenizer = common.tokenizer()
    c.template = "r1zero" if arg.model == common.EMBEDDED else "plain"  # templates.get_template
    c.prompts = ("Compute 12 + 7 + 30.",)  # questions, put into the template
    c.sampling = common.sampling(
        num_samples=4, max_new_tokens=64, temperature=0.6, top_p=0.95, chunk=16
    )
    return c
