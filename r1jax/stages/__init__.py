"""The stages of the R1 recipe, each a loss and a data flow handed to r1jax.update and
r1jax.loop: grpo, sft, distill, reward_model, rejection, evaluate, sample; pipeline composes
them (the only module that imports another stage)."""
