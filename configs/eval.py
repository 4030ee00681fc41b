"""Evaluation of a checkpoint on a benchmark with R1's protocol (r1jax/eval.py: `run`).

No arguments, the embedded run (a 2-core CPU, no network, a few minutes):
  python launch/eval.py --config=configs/eval.py --workdir=/tmp/eval_sumchain
evaluates the shipped embedded base model on the first 128 held-out sumchain questions (the set
configs/r1zero.py evaluates on), k=4 samples each at T=0.6, top-p 0.95, R1-Zero template.
Expected: pass@1 about 0.3, as at step 0 of configs/r1zero.py; a model trained by that config
(model=/tmp/r1zero/...) about 0.9.

A real model (R1 §5: T=0.6, top-p 0.95, 32,768 new tokens, k=64 for AIME, 16 for MATH; the R1
README prompt, configs.r1_eval, with the model's own chat template):
  python launch/eval.py --workdir=/tmp/eval_aime \\
    --config=configs/eval.py:model=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B,benchmark=aime2024 \\
    --config.data.path=/data/aime_2024 --config.chat_template=model
Expected (paper Table, distilled 1.5B): AIME 2024 pass@1 28.9, cons@64 52.7; MATH-500 pass@1
83.9 (open-r1's lighteval reproduction: 30.7 and 83.1).

Arguments after the colon: model= (a Hugging Face or r1jax model directory, or "embedded"),
benchmark= (gsm8k, math500, aime2024, countdown, sumchain), k= (samples per question; default
per benchmark), greedy (temperature 0, k=1). Named datasets load from local files
(--config.data.path=, a file or a directory of the hub repo's split files) or a prepared TFDS
--config.data.data_dir=. Other fields: --config.max_new_tokens=, --config.num_questions=, ...
An interrupted evaluation resumes: run the same command again.
"""

import ml_collections

EMBEDDED = "embedded"
# benchmark -> (k, max_new_tokens, num_questions (0: all), prompts_per_batch)
DEFAULTS = {
    "aime2024": (64, 32768, 0, 1),
    "math500": (16, 32768, 0, 4),
    "gsm8k": (4, 32768, 0, 16),
    "countdown": (4, 1024, 0, 16),  # TinyZero's 1024-problem test split and response length
    "sumchain": (4, 64, 128, 32),
}


def parse_arg(arg: str | None, **defaults) -> dict:
    """'model=X,benchmark=Y,greedy' -> {'model': 'X', 'benchmark': 'Y', 'greedy': True, ...}."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"--config argument {key!r} is unknown; known: {sorted(defaults)}")
        out[key] = value if eq else True
    return out


def get_config(arg=None):
    arg = parse_arg(arg, model=EMBEDDED, benchmark="sumchain", k="", greedy=False)
    if arg["benchmark"] not in DEFAULTS:
        raise ValueError(
            f"--config argument benchmark={arg['benchmark']!r} is unknown; known: {list(DEFAULTS)}"
        )
    k, max_new_tokens, num_questions, per_batch = DEFAULTS[arg["benchmark"]]
    greedy = bool(arg["greedy"])
    if arg["k"]:
        k = int(arg["k"])
    elif greedy:
        k = 1
    c = ml_collections.ConfigDict()
    c.model = arg["model"]  # a directory (r1jax or Hugging Face), or "embedded"
    c.model_overrides = {}  # ModelConfig fields, e.g. dtype="bfloat16"
    c.tokenizer = ""  # "" = the model directory's own tokenizer
    c.mesh = [("fsdp", -1)]
    c.benchmark = arg["benchmark"]
    # split "" = the benchmark's (test); path / data_dir for the named datasets; seed and
    # kwargs (test_size, task options) for the generated ones.
    c.data = dict(split="", path="", data_dir="", seed=0, kwargs={})
    c.num_questions = num_questions
    c.template = ""  # "" = the benchmark's: r1_eval (maths), r1zero, tinyzero_countdown
    c.template_kwargs = {}
    c.chat_template = "chatml"  # for r1_eval: "chatml", or "model" (the tokenizer's template)
    c.reward_kwargs = {}  # options of the accuracy reward, e.g. last_number_fallback=True
    c.reward_workers = 0 if c.benchmark in ("sumchain", "countdown") else 8
    c.reward_timeout_s = 10.0
    # Sampling, R1 §5: T=0.6, top-p 0.95, k samples per question; greedy only on request.
    c.k = k
    c.greedy = greedy
    c.temperature = 0.6
    c.top_p = 0.95
    c.top_k = 0
    c.max_new_tokens = max_new_tokens
    c.max_prompt_len = 1024
    c.stop = ()  # stop strings, e.g. --config.stop='("</answer>",)'
    c.chunk = 16 if max_new_tokens <= 1024 else 64
    c.prompts_per_batch = per_batch
    c.seed = 0
    # pass@j for these j (all <= k): 1, powers of two, and k; --config.pass_ks='(1, 8)'.
    c.pass_ks = tuple(sorted({1, k} | {2**i for i in range(1, 7) if 2**i <= k}))
    return c
