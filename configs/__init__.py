"""ml_collections configs; importable as `configs` so that one config can build on another."""


def optim(**overrides) -> dict:
    """config.optim for r1jax.optim.make_optimizer, declared once: AdamW with linear warmup, then
    a constant, cosine or linear schedule down to lr * min_lr_ratio; global-norm clipping.
    total_steps 0 means config.steps (the trainers fill it in)."""
    base = dict(
        lr=1e-5,
        warmup_steps=0,
        schedule="constant",  # constant | cosine | linear
        min_lr_ratio=0.0,
        weight_decay=0.0,
        b1=0.9,
        b2=0.95,
        eps=1e-8,
        grad_clip=1.0,  # 0 turns clipping off
        total_steps=0,
    )
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"optim(): unknown keys {unknown}; known: {sorted(base)}")
    return {**base, **overrides}
