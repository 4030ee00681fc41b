"""Rejection sampling into an SFT dataset (R1 stage 3; teacher traces for distillation).

No arguments, the embedded run (the shipped embedded base model on the running-sum task):
  python launch/rejection_sample.py --config=configs/rejection.py --workdir=/tmp/rejection
A real model (any r1jax or Hugging Face model directory; `data=` a spec of load_dataset):
  python launch/rejection_sample.py --workdir=/tmp/rs \\
    --config=configs/rejection.py:model=/path/to/stage1_checkpoint,data=math
Writes WORKDIR/rejection.jsonl (the "sft" schema), rejection.stats.json (sampled, kept, dropped
per reason) and, with --config.save_dropped, rejection.dropped.jsonl with each drop reason.
Train on the result (R1's stage-3 SFT, or trace distillation into a student) with
launch/sft.py and an SFT config whose data.source is "jsonl:WORKDIR/rejection.jsonl",
data.loss_on_prompt=False and model.init the model to fine-tune (r1jax/sft.py load_examples).

R1 [V2 B.3.3] samples "several" responses per prompt from the stage-1 checkpoint and keeps only
correct ones without mixed languages, long paragraphs or code blocks in the CoT; N, M, the
temperature and the thresholds below are our choices (the paper gives none).
"""

import ml_collections

from configs.r1zero import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, model="embedded", data="sumchain")
    embedded = arg.model == "embedded"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = [("fsdp", -1)]
    c.model = dict(init=arg.model, preset="tiny", overrides=dict(remat=False))
    if not embedded:  # sampling only: bf16 matmuls
        c.model.overrides.update(dtype="bfloat16")
    c.tokenizer = dict(path="")  # "" = the model directory's own tokenizer
    c.data = dict(
        name=arg.data,
        split="train",
        template="r1zero",
        template_kwargs={},
        kwargs={},
        num_prompts=0,  # 0 = every example of the split
    )
    accuracy = "countdown" if arg.data == "countdown" else "math"
    if arg.data == "countdown":
        c.data.template = "tinyzero_countdown"
    # The correctness reward decides what is kept; the others are logged in each row's reward.
    c.rewards = dict(
        accuracy=dict(name=accuracy, weight=1.0), format=dict(name="format", weight=1.0)
    )
    c.reward_weights = {}
    c.correctness = "auto"  # the configured accuracy reward
    c.reward_workers = 0 if embedded else 8
    c.reward_timeout_s = 10.0
    c.sampling = dict(
        num_samples=16,  # N completions per prompt
        prompts_per_batch=8,
        max_new_tokens=4096,
        temperature=0.7,
        top_p=0.95,
        top_k=0,
        chunk=64,
        max_prompt_len=1024,
        stop=[],
    )
    c.filters = dict(
        drop_truncated=True,
        language="en",
        min_language_share=0.95,  # of the words in the reasoning
        max_paragraph_chars=3000,
        max_paragraph_words=0,
        ngram=8,
        max_repeated_ngram_frac=0.3,
        max_line_repeats=4,
        min_line_chars=8,
        drop_code_blocks=True,
    )
    c.max_per_prompt = 4  # M: distinct completions kept per prompt
    c.output = ""  # "" = WORKDIR/rejection.jsonl
    c.save_dropped = False
    if embedded:
        c.data.num_prompts = 1024
        c.sampling.update(num_samples=8, prompts_per_batch=64, max_new_tokens=64, chunk=16)
        c.sampling.update(max_prompt_len=80, temperature=1.0, top_p=1.0)
        c.max_per_prompt = 2
    return c
