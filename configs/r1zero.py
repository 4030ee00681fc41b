"""R1-Zero: GRPO from a base model with rule-based rewards (accuracy + format), R1-Zero template.

No arguments, the embedded run (a 2-core CPU, no network, about 4 minutes):
  python launch/train.py --config=configs/r1zero.py --workdir=/tmp/r1zero
It starts from the shipped embedded base model (configs/pretrain.py made it) and trains it on the
procedural running-sum task. Expected: held-out eval/pass@1 (k=4, T=0.6, top-p 0.95) rises from
about 0.3 at step 0 to about 0.9, train/completion_len grows as the model stops guessing and
reasons, and the format reward saturates early.

The paper's recipe on a real model (R1 §2: lr 3e-6, beta 0.001, G 16, 32 questions per step,
temperature 1, reference reset every 400 steps, 16 minibatches per rollout):
  python launch/train.py --workdir=gs://... \\
    --config=configs/r1zero.py:model=/path/to/Qwen2.5-Math-1.5B,data=gsm8k
`model=` takes a Hugging Face or r1jax model directory; `data=` a dataset spec of
r1jax.data.load_dataset (gsm8k, math, countdown, jsonl:PATH, ...). Overrides:
`--config.rl.beta=0.0`, `--config.rollout.max_new_tokens=4096`, ...
"""

import ml_collections

import configs

EMBEDDED = "embedded"


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'model=X,data=Y,flag' -> ConfigDict(model='X', data='Y', flag=True) over the defaults."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"--config argument {key!r} is unknown; known: {sorted(defaults)}")
        out[key] = value if eq else True
    return ml_collections.ConfigDict(out)


def get_config(arg=None):
    arg = parse_arg(arg, model=EMBEDDED, data="sumchain")
    embedded = arg.model == EMBEDDED
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = [("fsdp", -1)]  # [(axis, size)]: axes data, fsdp, tensor; -1 takes the rest

    # Model: a directory (r1jax or Hugging Face), or "embedded" (r1jax/assets/embedded_base).
    # The embedded run decodes on CPU: unrolled layers skip per-step weight copies (config.py).
    c.model = dict(
        init=arg.model,
        preset="tiny",
        overrides=dict(remat=not embedded, unroll_decode=embedded),
    )
    if not embedded:
        c.model.overrides.update(param_dtype="float32", dtype="bfloat16")
    c.tokenizer = dict(path="")  # "" = the model directory's own tokenizer

    # Data and prompt template.
    c.data = dict(
        name=arg.data, train_split="train", eval_split="test", template="r1zero", kwargs={}
    )
    if arg.data == "countdown":
        c.data.template = "tinyzero_countdown"

    # Rewards: R1-Zero's rule reward is accuracy + format with the same weight.
    accuracy = "countdown" if arg.data == "countdown" else "math"
    c.rewards = dict(
        accuracy=dict(name=accuracy, weight=1.0), format=dict(name="format", weight=1.0)
    )
    c.reward_weights = {}  # label -> weight overrides, e.g. --config.reward_weights.format=0.5
    c.reward_workers = 0 if embedded else 8  # processes; 0 runs them in this process
    c.reward_timeout_s = 10.0

    # Rollout: B questions x G samples per step.
    c.rollout = dict(
        num_prompts=32,
        group_size=16,
        max_new_tokens=1024,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        chunk=32,
        max_prompt_len=512,
        stop=[],
    )

    # GRPO (DeepSeekMath form). beta and the reference reset as in R1.
    c.rl = dict(
        loss_type="grpo",
        beta=0.001,
        epsilon_low=0.2,
        epsilon_high=0.2,
        kl_estimator="k3",
        adv_scale="group",
        adv_eps=1e-4,
        adv_baseline="mean",
        num_minibatches=16,  # one rollout feeds this many optimizer steps (R1: 16)
        num_epochs=1,  # passes over each rollout (mu)
        micro_batch=8,  # rows per forward/backward; gradients accumulate exactly
        ref_reset_every=400,  # steps; 0 = never
        dynamic_sampling=False,
        max_gen_batches=1,  # DAPO-style zero-variance group filtering
        vocab_chunk=8192,
        max_nonfinite_in_a_row=5,
    )
    c.optim = configs.optim(lr=3e-6, warmup_steps=0, b2=0.99)
    c.steps = 10_400
    c.log_every = 1
    c.ckpt_every = 50
    c.samples_every = 10
    c.num_samples_logged = 8
    c.eval_every = 100
    # The paper's evaluation sampling: k samples per question at T=0.6, top-p 0.95.
    c.eval = dict(
        k=16,
        temperature=0.6,
        top_p=0.95,
        max_new_tokens=1024,
        num_questions=500,
        prompts_per_batch=16,
        num_logged=64,
    )

    if embedded:  # the laptop-sized run: ~1M-parameter model, fixed 80-token prompts
        c.rollout.update(
            num_prompts=16, group_size=8, max_new_tokens=64, chunk=16, max_prompt_len=80
        )
        c.rl.update(num_minibatches=1, micro_batch=32)
        c.optim.update(lr=3e-4, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
        c.steps, c.ckpt_every, c.eval_every, c.samples_every = 160, 40, 20, 10
        c.eval.update(k=4, max_new_tokens=64, num_questions=128, prompts_per_batch=128)
    return c


def sweep(add):
    """A sweep is code next to the config: each add(...) is one run's overrides."""
    for lr in (1e-4, 3e-4, 1e-3):
        for loss_type in ("grpo", "dr_grpo"):
            add(**{"optim.lr": lr, "rl.loss_type": loss_type})
