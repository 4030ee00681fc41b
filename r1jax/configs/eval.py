"""Evaluation of a checkpoint on a benchmark with R1's protocol (r1jax/stages/evaluate.py).

No arguments, the embedded run (a 2-core CPU, no network, a few minutes):
  python launch/eval.py --config=configs/eval.py --workdir=/tmp/eval_sumchain
evaluates the shipped embedded base model on the first 128 held-out sumchain questions (the set
configs/r1zero.py evaluates on), k=4 samples each at T=0.6, top-p 0.95, R1-Zero template.
Expected: pass@1 about 0.3, as at step 0 of configs/r1zero.py; a model trained by that config
(model=/tmp/r1zero/model) about 0.9.

A real model (R1 §5: T=0.6, top-p 0.95, 32,768 new tokens, k=64 for AIME, 16 for MATH; the R1
README prompt, templates.r1_eval, with the model's own chat template):
  python launch/eval.py --workdir=/tmp/eval_aime \\
    --config=configs/eval.py:model=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B,benchmark=aime2024 \\
    --config.data.path=/data/aime_2024 --config.chat_template=model
Expected (paper Table, distilled 1.5B): AIME 2024 pass@1 28.9, cons@64 52.7; MATH-500 pass@1
83.9 (open-r1's lighteval reproduction: 30.7 and 83.1).

Arguments after the colon: model= (a Hugging Face or r1jax model directory, or "embedded"),
benchmark= (gsm8k, math500, aime2024, countdown, sumchain), k= (samples per question; 0: the
benchmark's default), greedy (temperature 0, k=1). Named datasets load from local files
(--config.data.path=, a file or a directory of the hub repo's split files) or a prepared TFDS
--config.data.data_dir=. Other fields: --config.sampling.max_new_tokens=,
--config.data.num_examples= (questions; 0: all), ... An interrupted evaluation resumes: run the
same command again.
"""

from r1jax.configs import common

# benchmark -> (dataset, template, accuracy reward, k, max_new_tokens, questions, per batch)
BENCHMARKS = {
    "aime2024": ("aime2024", "r1_eval", "math", 64, 32768, 0, 1),
    "math500": ("math500", "r1_eval", "math", 16, 32768, 0, 4),
    "gsm8k": ("gsm8k", "r1_eval", "math", 4, 32768, 0, 16),
    # TinyZero's 1024-problem test split and response length
    "countdown": ("countdown", "tinyzero_countdown", "countdown", 4, 1024, 0, 16),
    "sumchain": ("sumchain", "r1zero", "math", 4, 64, 128, 32),
}
REWARD_OPTIONS = {
    "math": dict(last_number_fallback=False),
    "countdown": dict(format_score=0.1, score=1.0, last_line_only=False),
}


def get_config(arg=None):
    arg = common.parse_arg(arg, model=common.EMBEDDED, benchmark="sumchain", k=0, greedy=False)
    if arg.benchmark not in BENCHMARKS:
        raise ValueError(
            f"--config argument benchmark={arg.benchmark!r} is unknown; known: {list(BENCHMARKS)}"
        )
    dataset, template, reward, k, max_new_tokens, questions, per_batch = BENCHMARKS[arg.benchmark]
    k = arg.k or (1 if arg.greedy else k)
    c = common.base()
    c.model = common.model(arg.model)  # a directory (r1jax or Hugging Face), or "embedded"
    c.tokenizer = common.tokenizer()
    c.benchmark = arg.benchmark
    # Generated tasks (sumchain, countdown) take a data seed and task options (data.kwargs);
    # named datasets are read from data.path or data.data_dir.
    c.data = common.data(dataset, split="test", template=template, num_examples=questions, seed=0)
    c.chat_template = "chatml"  # for r1_eval: "chatml", or "model" (the tokenizer's template)
    c.rewards = common.rewards(accuracy=(reward, 1.0, REWARD_OPTIONS[reward]))
    c.correctness = "accuracy"
    c.reward_pool = common.reward_pool()  # auto: min(CPUs, 8) worker processes
    # Sampling, R1 §5: T=0.6, top-p 0.95, k samples per question; greedy only on request.
    c.sampling = common.sampling(
        num_prompts=per_batch,
        num_samples=k,
        greedy=arg.greedy,
        temperature=0.6,
        top_p=0.95,
        max_new_tokens=max_new_tokens,
        max_prompt_len=1024,
        chunk=16 if max_new_tokens <= 1024 else 64,
    )
    # pass@j for these j (all <= k): 1, powers of two, and k; --config.pass_ks='(1, 8)'.
    c.pass_ks = tuple(sorted({1, k} | {2**i for i in range(1, 7) if 2**i <= k}))
    return c
