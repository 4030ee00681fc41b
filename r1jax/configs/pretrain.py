"""Pretraining of the embedded base model on its synthetic corpus (r1jax/data/embedded.py).

  python launch/sft.py --config=configs/pretrain.py --workdir=/tmp/pretrain

Trains a SentencePiece tokenizer on the corpus, then a ~1M-parameter Qwen2-style model with
next-token loss on every token. The result (WORKDIR/model) is what r1jax ships as
r1jax/assets/embedded_base, the starting point of `configs/r1zero.py` with no arguments:
  python launch/sft.py --config=configs/pretrain.py --workdir=/tmp/pretrain \\
      && rm -rf r1jax/assets/embedded_base && cp -r /tmp/pretrain/model r1jax/assets/embedded_base
Expected: eval/loss ~0.3 nats/token after 1500 steps (~15 min on 2 CPU cores).
`:smoke` is a few-second version for tests.
"""

from r1jax.configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, smoke=False)
    c = common.base()
    c.model = common.model(
        "",  # from scratch
        d_model=128,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        head_dim=32,
        d_ff=512,
        init_std=0.02,
        max_seq_len=512,
    )
    c.tokenizer = common.tokenizer(vocab_size=512, train_docs=5000)
    c.data = common.data(
        "embedded",
        num_examples=60_000,  # documents, from the sumchain *train* split only
        kwargs=dict(seed=0, slip=0.4),  # slip: probability of dropping each carry in reasoning
        loss_on_prompt=True,  # pretraining: every token is a target
        eval_fraction=0.01,
    )
    c.row_len = 288  # two ~140-token documents per row
    c.batch_size = 32
    c.micro_batch = 32
    c.vocab_chunk = 8192
    c.optim = common.optim(
        lr=2e-3, warmup_steps=100, schedule="cosine", min_lr_ratio=0.05, weight_decay=0.01, b2=0.98
    )
    c.update(common.loop(1500, log_every=50, eval_every=50, ckpt_every=500))
    if arg.smoke:  # a few seconds, for tests
        c.data.num_examples, c.steps, c.batch_size, c.micro_batch = 400, 6, 8, 4
        c.log_every, c.eval_every, c.tokenizer.train_docs = 3, 3, 400
    return c
