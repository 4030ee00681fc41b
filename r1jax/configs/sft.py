"""Supervised fine-tuning of an existing model on (prompt, completion) JSONL: R1's cold start,
the stage-3 SFT on rejection-sampled data, and trace distillation into a smaller student.

  python launch/sft.py --config=configs/sft.py:model=DIR,data=/path/train.jsonl --workdir=DIR

Rows need `prompt` and `completion` (what the rejection stage writes). R1's SFT settings (§3):
2-3 epochs, cosine from 5e-5 to 5e-6, batch 128; distillation (§4): lr 1e-4 (Qwen2.5-Math-1.5B)
... 2e-5, cosine to 0.1x. Loss on completion tokens only; several examples packed per row.
Expected: train/loss falls and eval/loss (held-out rows, data.eval_fraction) follows it.
"""

from r1jax.configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, model=common.EMBEDDED, data="", lr=5e-5, epochs=2.0)
    c = common.base()
    c.model = common.model(arg.model)
    # The model's own tokenizer; without one, a SentencePiece model of vocab_size is trained on
    # the first train_docs documents (the embedded pretraining).
    c.tokenizer = common.tokenizer(vocab_size=512, train_docs=0)
    c.data = common.data(
        f"jsonl:{arg.data}" if arg.data else "",
        kwargs=dict(seed=0, slip=0.0),  # for name="embedded": the corpus's seed and slip rate
        loss_on_prompt=False,  # train on completion tokens only
        eval_fraction=0.02,  # held-out examples for eval/loss
    )
    c.row_len = 1024  # tokens per packed row
    c.batch_size = 16  # packed rows per optimizer step
    c.micro_batch = 4  # rows per forward/backward; gradients accumulate exactly
    c.epochs = arg.epochs  # sets `steps` from the data size when steps == 0
    c.vocab_chunk = 8192
    c.optim = common.optim(lr=arg.lr, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    c.update(common.loop(0, log_every=10, eval_every=10, ckpt_every=200))
    return c
