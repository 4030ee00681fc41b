"""Distillation into a student model, the R1 way (§4) or by logits.

Logit distillation (logit_config): a student trained on KL(teacher || student) over the
completions of SFT data.

  python launch/distill.py --workdir=/tmp/distill \\
    --config=configs/distill.py:student=/path/student,teacher=/path/teacher,data=/path/sft.jsonl
`student` / `teacher`: r1jax or Hugging Face model directories with the same tokenizer (checked
before anything is compiled; `student=` empty trains `model.preset` from scratch with the
teacher's tokenizer). `data`: a JSONL file in the "sft" schema ({prompt, completion}), e.g. the
output of launch/rejection_sample.py, or "embedded" (the embedded corpus). The loss runs over
completion tokens only (data.loss_on_prompt=False).

R1 distils by SFT on teacher traces instead (r1_paper.md §4: 2-3 epochs, cosine decay to 0.1x,
lr 1e-4 for Qwen2.5-Math-1.5B, batch 64); the optimizer defaults below follow that recipe.
"""

import ml_collections

import configs
from configs.r1zero import parse_arg


def logit_config(arg=None):
    arg = parse_arg(arg, student="", teacher="", data="embedded")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = [("fsdp", -1)]
    c.model = dict(init=arg.student, preset="tiny", overrides=dict(remat=True))
    c.teacher = dict(init=arg.teacher, overrides=dict(remat=False), tokenizer_path="")
    c.tokenizer = dict(path="")  # "" = the student's own (or, from scratch, the teacher's)
    c.data = dict(
        source=arg.data if arg.data == "embedded" else "jsonl:" + arg.data,
        num_documents=20_000,  # for source="embedded"
        seed=0,
        slip=0.0,
        loss_on_prompt=False,  # distil the completions only
        eval_fraction=0.01,
    )
    c.distill = dict(temperature=1.0)
    c.row_len = 8192
    c.batch_rows = 64
    c.micro_rows = 4
    c.steps = 1000
    c.vocab_chunk = 8192
    c.optim = configs.optim(lr=1e-4, warmup_steps=20, schedule="cosine", min_lr_ratio=0.1)
    c.log_every = 10
    c.ckpt_every = 200
    return c


def get_config(arg=None):
    """The distillation path: teacher traces by rejection sampling, then SFT of the student.

    No arguments, the embedded run (2 CPU cores, ~10 minutes):
      python launch/distill.py --config=configs/distill.py --workdir=/tmp/distill
    trains the teacher first (configs/r1zero.py: the embedded base after R1-Zero GRPO), samples
    its correct traces on train prompts, fine-tunes the student (the embedded base itself, as
    R1-Distill fine-tunes Qwen base models) and evaluates base, teacher and student on the held-out
    split. Expected: student pass@1 well above its base (~0.27), close to the teacher (~0.9).
    Arguments: teacher=DIR (skip training one), student=DIR | embedded | scratch (a smaller
    random model, `student_overrides`), mode=traces | logits (token-level KL to the teacher on
    the same traces; logit_config's fields under `logit`).
    """
    from configs import eval as eval_config
    from configs import r1zero, rejection, sft

    arg = parse_arg(arg, teacher="", student="embedded", mode="traces")
    if arg.mode not in ("traces", "logits"):
        raise ValueError(f"--config argument mode={arg.mode!r}: traces or logits")
    c = ml_collections.ConfigDict()
    c.mode, c.teacher, c.student = arg.mode, arg.teacher, arg.student
    c.student_overrides = dict(
        d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, d_ff=256, max_seq_len=512
    )
    c.teacher_rl = r1zero.get_config()  # used when teacher is ""
    c.traces = rejection.get_config()
    c.traces.data.num_prompts = 1024
    c.traces.sampling.update(
        num_samples=4,
        prompts_per_batch=128,
        max_new_tokens=64,
        chunk=16,
        max_prompt_len=80,
        temperature=0.6,
    )
    c.sft = sft.get_config()  # R1: 2-3 epochs, cosine to 0.1x
    c.sft.update(
        row_len=288, batch_rows=16, micro_rows=16, steps=150, log_every=10, ckpt_every=1000
    )
    c.sft.optim.update(lr=3e-4, warmup_steps=10, min_lr_ratio=0.1)
    c.logit = logit_config()
    c.logit.update(row_len=288, batch_rows=16, micro_rows=16, steps=150, log_every=10)
    c.logit.model.overrides = dict(remat=False)
    c.logit.optim.update(lr=3e-4, warmup_steps=10)
    c.eval = eval_config.get_config()
    return c
