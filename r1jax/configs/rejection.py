"""Rejection sampling into an SFT dataset (R1 stage 3; teacher traces for distillation).

No arguments, the embedded run (the shipped embedded base model on the running-sum task):
  python launch/rejection_sample.py --config=configs/rejection.py --workdir=/tmp/rejection
A real model (any r1jax or Hugging Face model directory; `data=` a spec of load_dataset):
  python launch/rejection_sample.py --workdir=/tmp/rs \\
    --config=configs/rejection.py:model=/path/to/stage1_checkpoint,data=math
Writes WORKDIR/rejection.jsonl (the "sft" schema), rejection.stats.json (sampled, kept, dropped
per reason) and, with --config.save_dropped, rejection.dropped.jsonl with each drop reason.
Train on the result (R1's stage-3 SFT, or trace distillation into a student) with
launch/sft.py and an SFT config whose data.name is "jsonl:WORKDIR/rejection.jsonl",
data.loss_on_prompt=False and model.init the model to fine-tune (r1jax/data/packing.py).

R1 [V2 B.3.3] samples "several" responses per prompt from the stage-1 checkpoint and keeps only
correct ones without mixed languages, long paragraphs or code blocks in the CoT; N, M, the
temperature and the thresholds below are our choices (the paper gives none).
"""

from r1jax.configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, model=common.EMBEDDED, data="sumchain")
    embedded = arg.model == common.EMBEDDED
    countdown = arg.data == "countdown"
    c = common.base()
    c.model = common.model(arg.model, remat=False)
    if not embedded:  # sampling only: bf16 matmuls
        c.model.overrides.dtype = "bfloat16"
    c.tokenizer = common.tokenizer()
    c.data = common.data(
        arg.data,
        template="tinyzero_countdown" if countdown else "r1zero",
        num_examples=1024 if embedded else 0,  # prompts; 0 = every example of the split
    )
    # The correctness reward decides what is kept; the others are logged in each row's reward.
    c.rewards = common.rewards(
        accuracy=("countdown" if countdown else "math", 1.0), format=("format", 1.0)
    )
    c.correctness = "auto"  # the configured accuracy reward
    c.reward_pool = common.reward_pool()  # auto: min(CPUs, 8) worker processes
    # num_samples (N) completions for each of num_prompts prompts per batch.
    c.sampling = common.sampling(
        num_prompts=8,
        num_samples=16,
        max_new_tokens=4096,
        max_prompt_len=1024,
        temperature=0.7,
        top_p=0.95,
        chunk=64,
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
        c.sampling.update(
            num_prompts=64,
            num_samples=8,
            max_new_tokens=64,
            chunk=16,
            max_prompt_len=80,
            temperature=1.0,
            top_p=1.0,
        )
        c.max_per_prompt = 2
    return c
