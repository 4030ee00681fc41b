"""Distillation into a student model, the R1 way (§4) or by logits.

No arguments, the embedded run (2 CPU cores, ~10 minutes):
  python launch/distill.py --config=configs/distill.py --workdir=/tmp/distill
trains the teacher first (configs/r1zero.py: the embedded base after R1-Zero GRPO), samples
its correct traces on train prompts, fine-tunes the student (the embedded base itself, as
R1-Distill fine-tunes Qwen base models) and evaluates base, teacher and student on the held-out
split. Expected: student pass@1 well above its base (~0.27), close to the teacher (~0.9).
Arguments: teacher=DIR (skip training one), student=DIR | embedded | scratch (a smaller random
model, `student_overrides`), mode=traces | logits (token-level KL to the teacher on the same
traces; the logit stage's config is `logit`, logit_config below).

Logit distillation alone (r1jax/stages/distill.py): a student trained on KL(teacher || student)
over the completions of SFT data; `student` / `teacher` are r1jax or Hugging Face model
directories with the same tokenizer (checked before anything is compiled; an empty student
trains `model.preset` from scratch with the teacher's tokenizer). R1 distils by SFT on teacher
traces (r1_paper.md §4: 2-3 epochs, cosine decay to 0.1x, lr 1e-4 for Qwen2.5-Math-1.5B, batch
64); the optimizer defaults below follow that recipe.
"""

from r1jax.configs import common, r1zero, rejection, sft
from r1jax.configs import eval as eval_config


def logit_config(arg=None):
    arg = common.parse_arg(arg, student="", teacher="", data="embedded")
    c = common.base()
    c.model = common.model(arg.student, remat=True)  # the student
    c.teacher = common.model(arg.teacher, remat=False)
    c.tokenizer = common.tokenizer()  # "" = the student's own (from scratch: the teacher's)
    c.teacher_tokenizer = common.tokenizer()  # "" = the teacher directory's own
    c.data = common.data(
        arg.data if arg.data == "embedded" else "jsonl:" + arg.data,
        num_examples=20_000,  # documents of the embedded corpus; for jsonl: 0 = all
        kwargs=dict(seed=0, slip=0.0),
        loss_on_prompt=False,  # distil the completions only
        eval_fraction=0.01,
    )
    if arg.data != "embedded":
        c.data.num_examples = 0
    c.distill = dict(temperature=1.0)
    c.row_len = 8192
    c.batch_size = 64
    c.micro_batch = 4
    c.vocab_chunk = 8192
    c.optim = common.optim(lr=1e-4, warmup_steps=20, schedule="cosine", min_lr_ratio=0.1)
    c.update(common.loop(1000, log_every=10, eval_every=10, ckpt_every=200))
    return c


def get_config(arg=None):
    arg = common.parse_arg(arg, teacher="", student=common.EMBEDDED, mode="traces")
    if arg.mode not in ("traces", "logits"):
        raise ValueError(f"--config argument mode={arg.mode!r}: traces or logits")
    c = common.base()
    c.mode, c.teacher, c.student = arg.mode, arg.teacher, arg.student
    c.student_overrides = common.model(
        "", d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, d_ff=256, max_seq_len=512
    ).overrides
    c.teacher_rl = r1zero.get_config()  # used when teacher is ""
    c.traces = rejection.get_config()
    c.traces.data.num_examples = 1024
    c.traces.sampling.update(
        num_samples=4,
        num_prompts=128,
        max_new_tokens=64,
        chunk=16,
        max_prompt_len=80,
        temperature=0.6,
    )
    c.sft = sft.get_config()  # R1: 2-3 epochs, cosine to 0.1x
    c.sft.update(row_len=288, batch_size=16, micro_batch=16, steps=150, ckpt_every=1000)
    c.sft.update(log_every=10, eval_every=10)
    c.sft.optim.update(lr=3e-4, warmup_steps=10, min_lr_ratio=0.1)
    c.logit = logit_config()
    c.logit.update(row_len=288, batch_size=16, micro_batch=16, steps=150, log_every=10)
    c.logit.model.overrides.remat = False
    c.logit.optim.update(lr=3e-4, warmup_steps=10)
    c.eval = eval_config.get_config()
    return c
