"""Logit distillation: a student trained on KL(teacher || student) over SFT data's completions.

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


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'student=X,teacher=Y,data=Z' -> ConfigDict over the defaults."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"--config argument {key!r} is unknown; known: {sorted(defaults)}")
        out[key] = value
    return ml_collections.ConfigDict(out)


def get_config(arg=None):
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
    c.optim = dict(
        lr=1e-4,
        warmup_steps=20,
        schedule="cosine",
        min_lr_ratio=0.1,
        weight_decay=0.0,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        grad_clip=1.0,
        total_steps=0,
    )
    c.log_every = 10
    c.ckpt_every = 200
    return c
