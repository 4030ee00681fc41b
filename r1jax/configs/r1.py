"""The four-stage R1 pipeline (R1 §3): cold start -> reasoning RL -> rejection sampling + SFT
from the base -> all-scenario RL. r1jax/stages/pipeline.py runs it, one sub-directory per stage.

No arguments, the embedded run (the shipped embedded base model and the running-sum task; a
2-core CPU, no network, under 20 minutes):
  python launch/pipeline.py --config=configs/r1.py --workdir=/tmp/r1
It prints held-out pass@1 (k=4, T=0.6, top-p 0.95) after every stage; stage 2 (RL) improves on
stage 1 (cold-start SFT), and stage 3 (SFT of the base on stage 2's filtered samples) recovers
most of stage 2's accuracy without RL, as in R1's Dev3.

Each stage's config is the matching single-stage config (configs/sft.py, r1zero.py,
rejection.py, reward_model.py, eval.py) with the paper's stage settings, so a real-model pipeline
is those configs pointed at real data: e.g. --config.base=/path/to/base and
--config.cold_start.data.name=jsonl:/path/cold_start.jsonl.
"""

import ml_collections

from r1jax.configs import eval as eval_config
from r1jax.configs import r1zero, rejection, reward_model, sft


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.base = "embedded"
    c.cold_start_examples = 80  # R1: "thousands" of long CoT samples (vs 600k later)
    c.preference_pairs = 512  # R1: 66,000 helpfulness pairs

    # Stage 1: cold-start SFT of the base (R1: 2-3 epochs, cosine 5e-5 -> 5e-6).
    s1 = sft.get_config()
    s1.data.name = "embedded_cold_start"
    # A light touch: on this task more cold-start SFT alone would solve it, leaving RL nothing.
    s1.update(row_len=288, batch_size=16, micro_batch=16, steps=5, ckpt_every=1000)
    s1.update(log_every=1, eval_every=1)
    s1.optim.update(lr=1e-4, warmup_steps=5, min_lr_ratio=0.1)
    c.cold_start = s1

    # Stage 2: reasoning RL with rule rewards + language consistency (R1: added to the reward),
    # clip range 10 as R1 states for this stage (`stage1`).
    s2 = r1zero.get_config("stage1")
    s2.rewards.language = dict(name="language", weight=0.1, kwargs=dict(language="en"))
    s2.update(steps=80, eval_every=0, ckpt_every=1000)
    c.reasoning_rl = s2

    # Stage 3: rejection sampling from stage 2, then SFT from the base on what is kept.
    s3r = rejection.get_config()
    s3r.data.num_examples = 512
    s3r.sampling.update(
        num_samples=4,
        num_prompts=64,
        max_new_tokens=64,
        chunk=16,
        max_prompt_len=80,
        temperature=0.7,
    )
    c.rejection = s3r
    s3 = sft.get_config()
    s3.update(row_len=288, batch_size=16, micro_batch=16, steps=60, ckpt_every=1000)
    s3.update(log_every=10, eval_every=10)
    s3.optim.update(lr=3e-4, warmup_steps=5, min_lr_ratio=0.1)
    c.rejection_sft = s3

    # Stage 4: all-scenario RL from stage 3: rules + a reward model on the summary, T=0.7.
    rm = reward_model.get_config()
    rm.data.name = "jsonl:embedded_preferences"
    rm.update(row_len=160, batch_size=32, micro_batch=32, steps=30, log_every=10)
    rm.model.overrides.remat = False
    rm.optim.update(lr=3e-4, warmup_steps=5)
    c.reward_model = rm
    s4 = r1zero.get_config()
    s4.sampling.temperature = 0.7
    s4.rewards.helpful = dict(
        name="reward_model", weight=0.2, kwargs=dict(checkpoint="", scope="summary")
    )
    s4.optim.update(lr=1e-4, schedule="constant")
    s4.update(steps=40, eval_every=0, ckpt_every=1000)
    c.all_scenario_rl = s4

    # Evaluation after every stage: the held-out split, the paper's sampling.
    c.eval = eval_config.get_config()
    return c
