"""Supervised fine-tuning of an existing model on (prompt, completion) JSONL: R1's cold start,
the stage-3 SFT on rejection-sampled data, and trace distillation into a smaller student.

  python launch/sft.py --config=configs/sft.py:model=DIR,data=/path/train.jsonl --workdir=DIR

Rows need `prompt` and `completion` (what r1jax/rejection.py writes). R1's SFT settings (§3):
2-3 epochs, cosine from 5e-5 to 5e-6, batch 128; distillation (§4): lr 1e-4 (Qwen2.5-Math-1.5B)
... 2e-5, cosine to 0.1x. Loss on completion tokens only; several examples packed per row.
"""

import ml_collections

import configs
from configs.r1zero import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, model="embedded", data="", lr="5e-5", epochs="2")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = [("fsdp", -1)]
    c.model = dict(init=arg.model, preset="tiny", overrides={})
    c.tokenizer = dict(path="", vocab_size=512, train_docs=0)  # the model's own tokenizer
    c.data = dict(
        source=f"jsonl:{arg.data}" if arg.data else "",
        num_documents=0,
        seed=0,
        slip=0.0,
        loss_on_prompt=False,
        eval_fraction=0.02,
    )
    c.row_len = 1024
    c.batch_rows = 16  # packed rows per step
    c.micro_rows = 4
    c.epochs = float(arg.epochs)  # sets `steps` from the data size when steps == 0
    c.steps = 0
    c.vocab_chunk = 8192
    lr = float(arg.lr)
    c.optim = configs.optim(lr=lr, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    c.log_every = 10
    c.ckpt_every = 200
    return c
