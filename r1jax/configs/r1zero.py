"""R1-Zero: GRPO from a base model with rule-based rewards (accuracy + format), R1-Zero template.

No arguments, the embedded run (a 2-core CPU, no network, about 4 minutes):
  python launch/train.py --config=configs/r1zero.py --workdir=/tmp/r1zero
It starts from the shipped embedded base model (configs/pretrain.py made it) and trains it on the
procedural running-sum task for 160 steps, evaluating every 20. Expected: held-out eval/pass@1
(k=4, T=0.6, top-p 0.95) rises from about 0.3 at step 0 to about 0.9, train/completion_len grows
as the model stops guessing and reasons, and the format reward saturates early.

The paper's recipe on a real model (R1 §2: lr 3e-6, beta 0.001, G 16, 32 questions per step,
temperature 1, reference reset every 400 steps, 16 minibatches per rollout):
  python launch/train.py --workdir=gs://... \\
    --config=configs/r1zero.py:model=/path/to/Qwen2.5-Math-1.5B,data=gsm8k
`model=` takes a Hugging Face or r1jax model directory; `data=` a dataset spec of
r1jax.data.load_dataset (gsm8k, math, countdown, jsonl:PATH, ...). Overrides, e.g.
`--config.rl.beta=0.0 --config.sampling.max_new_tokens=4096 --config.rewards.format.weight=0.5`.
The Qwen2.5-Math bases have a 4,096-token context, so the 1,024-token limit stays there.

`paper` adds the paper's length (R1-Zero and its 32B Qwen run: max length 32,768; read as the
response limit, the prompt comes on top) on a base whose context holds it, e.g. Qwen2.5-7B
(131,072 positions); a base whose context is shorter is an error before anything is compiled:
  python launch/train.py --config=configs/r1zero.py:model=/path/to/Qwen2.5-7B,data=math,paper
`model=paper` is the same on the qwen2.5-7b preset with random weights, for the planner:
  python launch/plan.py --config=configs/r1zero.py:model=paper --target=v5p-64
The clip range is not stated for R1-Zero, so it stays 0.2; R1's reasoning RL states eps = 10
(r1_paper.md §3): add `stage1` for it. The paper's own Qwen R1-Zero run used Qwen2.5-32B at lr
2e-6 and reports that a 7B dense base did not learn to reason this way (§4, [V2 G.1]).
"""

from ml_collections import config_dict

from r1jax.configs import common

EMBEDDED = common.EMBEDDED
PAPER = "paper"  # model=paper: the paper path on PAPER_PRESET's shapes (random weights)
PAPER_PRESET = "qwen2.5-7b"


def get_config(arg=None):
    arg = common.parse_arg(arg, model=EMBEDDED, data="sumchain", paper=False, stage1=False)
    embedded = arg.model == EMBEDDED
    c = common.base()

    # Model. The embedded run decodes on CPU: unrolled layers skip per-step weight copies.
    c.model = common.model(arg.model, remat=not embedded, unroll_decode=embedded)
    if arg.model == PAPER:
        c.model = common.model("", preset=PAPER_PRESET, remat=True)
    if not embedded:
        c.model.overrides.update(param_dtype="float32", dtype="bfloat16")
    c.tokenizer = common.tokenizer()

    # Data and prompt template; rewards: R1-Zero's rule reward, accuracy + format, equal weights.
    countdown = arg.data == "countdown"
    c.data = common.data(arg.data, template="tinyzero_countdown" if countdown else "r1zero")
    c.rewards = common.rewards(
        accuracy=("countdown" if countdown else "math", 1.0), format=("format", 1.0)
    )
    c.correctness = "auto"  # the configured accuracy reward decides train/accuracy
    c.reward_pool = common.reward_pool()  # auto: min(CPUs, 8) worker processes

    # Rollout: num_prompts questions x num_samples (G) completions per step.
    c.sampling = common.sampling(num_prompts=32, num_samples=16, max_new_tokens=1024)

    # GRPO (DeepSeekMath form). beta and the reference reset as in R1.
    c.rl = dict(
        loss_type="grpo",  # grpo | dr_grpo | dapo | gspo (r1jax/rl/losses.py)
        beta=0.001,
        epsilon_low=0.2,
        epsilon_high=0.2,
        kl_estimator="k3",
        kl_bias_correction=False,  # KL term times the ratio (DeepSeek-V3.2)
        dual_clip=config_dict.placeholder(float),  # c > 1 caps the loss of A < 0 terms
        max_log_ratio=config_dict.placeholder(float),  # None: the variant's default
        policy_loss="",  # "" built in; "package.module:function" a user's (README)
        adv_scale="group",  # group | batch | none
        adv_eps=1e-4,
        adv_baseline="mean",  # mean | loo
        num_minibatches=16,  # one rollout feeds this many optimizer steps (R1: 16)
        num_epochs=1,  # passes over each rollout (mu)
        ref_reset_every=400,  # steps; 0 = never
        dynamic_sampling=False,  # DAPO: drop zero-variance groups and draw more
        max_gen_batches=1,
        # MoE: route the update with the rollout's expert choices (routing replay); their
        # disagreement with the updated router is reported as routing_disagreement either way.
        routing_replay=False,
        router_aux_coef=0.0,  # MoE: DeepSeek-V3's sequence-wise balance loss (V3 used 1e-4)
        # Learner rows (r1jax/stages/grpo.py): pack completions with their prompts into rows of
        # pack_len tokens (0: sampling.max_prompt_len + max_new_tokens) for the old-policy,
        # reference and update passes, micro_tokens tokens per device micro-batch (0: those of a
        # padded micro-batch of micro_batch rows); False: one padded row per completion.
        pack=False,
        pack_len=0,
        micro_tokens=0,
        # Sampler/trainer correction (r1jax/rl/losses.py): none | tis | mis; None below takes
        # the defaults: tis token-level, cap 2.0 (verl); mis sequence-level, band [0, 3] (TRL).
        is_correction="none",
        is_level=config_dict.placeholder(str),  # token | sequence
        is_threshold=config_dict.placeholder(float),  # tis cap C / mis upper bound
        is_threshold_low=config_dict.placeholder(float),  # tis lower clamp / mis lower bound
    )
    c.micro_batch = 8  # rows per forward/backward; gradients accumulate exactly
    c.vocab_chunk = 8192  # log-probs over vocabulary chunks: no [rows, T, V] logits
    c.optim = common.optim(lr=3e-6, warmup_steps=0, b2=0.99)
    c.update(common.loop(10_400, ckpt_every=50, eval_every=100, samples_every=10))
    # Held-out evaluation, the paper's sampling: k samples per question at T=0.6, top-p 0.95.
    c.eval = dict(
        num_questions=500,
        num_logged=64,
        sampling=common.sampling(
            num_prompts=16, num_samples=16, max_new_tokens=1024, temperature=0.6, top_p=0.95
        ),
    )

    if arg.paper or arg.model == PAPER:  # R1-Zero's length limit (R1 §2; r1_paper.md §2)
        c.sampling.update(max_new_tokens=32_768, max_prompt_len=1024)
        c.eval.sampling.update(max_new_tokens=32_768, max_prompt_len=1024)
    if arg.stage1:  # R1's reasoning-RL stage states a clip range of 10 ([N] Methods)
        c.rl.update(epsilon_low=10.0, epsilon_high=10.0)

    if embedded:  # the laptop-sized run: ~1M-parameter model, fixed 80-token prompts
        c.sampling.update(
            num_prompts=16, num_samples=8, max_new_tokens=64, chunk=16, max_prompt_len=80
        )
        c.rl.num_minibatches = 1
        c.micro_batch = 32
        c.optim.update(lr=3e-4, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
        c.update(steps=160, ckpt_every=40, eval_every=20, samples_every=10)
        c.eval.num_questions = 128
        c.eval.sampling.update(
            num_prompts=128, num_samples=4, max_new_tokens=64, chunk=16, max_prompt_len=80
        )
    return c


def sweep(add):
    """A sweep is code next to the config: each add(...) is one run's overrides."""
    for lr in (1e-4, 3e-4, 1e-3):
        for loss_type in ("grpo", "dr_grpo"):
            add(**{"optim.lr": lr, "rl.loss_type": loss_type})
