"""Writes tests/golden/trl_losses.json: TRL GRPOTrainer losses and gradients on fixed inputs.

Run once by hand (needs `pip install trl`; r1jax never imports TRL):
    python tests/golden/make_trl_golden.py

TRL's real code path: a GRPOTrainer is built around a tiny random Qwen2 model (no download), its
`_get_per_token_logps_and_entropies` is replaced by a function returning our fixed per-token
log-probs (a leaf tensor, so backward() gives d loss / d logp), and `trainer.compute_loss` is
called on each micro-batch exactly as HF Trainer's accumulation loop would.

Apples-to-apples: one optimizer step of TRL = GAS micro-batches of `per_device_train_batch_size`
sequences, with steps_per_generation = GAS (TRL's default), so the generation batch = our
minibatch of N sequences. TRL scales each micro-batch's loss for accumulation itself
(`loss_is_scaled_for_ga = True`): grpo and dr_grpo divide by GAS, dapo divides the token sum by
num_items_in_batch (tokens of the whole generation batch, 1 process). The optimizer-step loss is
therefore the SUM of the micro-batch losses, which is what r1jax's full-minibatch `policy_loss`
returns; the gradient of that sum w.r.t. the logps is recorded too. For grpo/dr_grpo the sum
equals the true full-batch objective because the micro-batches have equal sizes.
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
import trl
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

N, T, G, GAS, MAX_LEN = 8, 6, 4, 2, 8
OUT = Path(__file__).with_name("trl_losses.json")


def make_inputs():
    rng = np.random.default_rng(0)
    lengths = np.array([6, 3, 1, 5, 0, 6, 2, 4])  # ragged; one empty (e.g. masked truncation)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
    logp = rng.uniform(-3.0, -0.05, (N, T)).astype(np.float32)
    # Token log-ratios in [-0.5, 0.5]: ratios 0.61..1.65, both inside and outside 1 +- 0.2/0.28.
    old = (logp - rng.uniform(-0.5, 0.5, (N, T))).astype(np.float32)
    ref = (logp + rng.uniform(-0.3, 0.3, (N, T))).astype(np.float32)
    adv = np.array([1.2, -0.7, 0.0, -0.5, 0.9, -1.1, 0.4, -0.2], np.float32)
    # GSPO: per-sequence mean log-ratio d_i around the 3e-4/4e-4 clip range, plus zero-mean noise:
    # seqs 0, 6 clipped high (A > 0), 1, 5 clipped low (A < 0), 3 above the range but A < 0.
    d = np.array([1e-3, -5e-4, 5e-4, 6e-4, 0.0, -1e-3, 6e-4, 1e-4])
    noise = rng.uniform(-0.05, 0.05, (N, T)) * mask
    noise -= noise.sum(1, keepdims=True) / np.maximum(lengths, 1)[:, None] * mask
    old_seq = (logp - d[:, None] - noise).astype(np.float32)
    return dict(mask=mask, logp=logp, old=old, ref=ref, adv=adv, old_seq=old_seq)


# TRL 1.16 defaults use_bias_correction_kl=True (KL term times the ratio, DeepSeek-V3.2); the
# DeepSeekMath k3 term is use_bias_correction_kl=False. Both are recorded.
PLAIN_KL = dict(use_bias_correction_kl=False)
CASES = [
    # name, GRPOConfig overrides, which old logps (None: on-policy, TRL uses logp.detach())
    ("grpo_beta", dict(loss_type="grpo", beta=0.04, epsilon=0.2, **PLAIN_KL), "old"),
    ("grpo_onpolicy", dict(loss_type="grpo", beta=0.04, epsilon=0.2, **PLAIN_KL), None),
    ("grpo_beta_biascorr", dict(loss_type="grpo", beta=0.04, epsilon=0.2), "old"),
    ("grpo_onpolicy_biascorr", dict(loss_type="grpo", beta=0.04, epsilon=0.2), None),
    ("dapo", dict(loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28), "old"),
    (
        "dapo_beta",
        dict(loss_type="dapo", beta=0.04, epsilon=0.2, epsilon_high=0.28, **PLAIN_KL),
        "old",
    ),
    ("dr_grpo", dict(loss_type="dr_grpo", beta=0.0, epsilon=0.2), "old"),
    (
        "gspo",
        dict(
            loss_type="grpo",
            importance_sampling_level="sequence",
            beta=0.0,
            epsilon=3e-4,
            epsilon_high=4e-4,
        ),
        "old_seq",
    ),
]


def make_trainer(overrides, tmp):
    vocab = {"<pad>": 0, "<eos>": 1, "a": 2, "b": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )
    cfg = Qwen2Config(
        vocab_size=4,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    args = GRPOConfig(
        output_dir=tmp,
        per_device_train_batch_size=N // GAS,
        gradient_accumulation_steps=GAS,
        num_generations=G,
        max_completion_length=MAX_LEN,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        seed=0,
        **overrides,
    )
    # Saved locally and passed as a path: with beta > 0 TRL builds its reference model from it.
    model_dir = os.path.join(tmp, "tiny-qwen2")
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    return GRPOTrainer(
        model=model_dir,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a b"] * N}),
        processing_class=tokenizer,
    )


def run_case(trainer, x, old_key):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = GAS
    mb = N // GAS
    num_items = torch.tensor(float(x["mask"].sum()))
    losses, grads, metrics = [], [], []
    for k in range(GAS):
        s = slice(k * mb, (k + 1) * mb)
        logp = torch.tensor(x["logp"][s], requires_grad=True)

        def fake_logps(*args, _logp=logp, **kwargs):
            return _logp, torch.zeros_like(_logp), None

        trainer._get_per_token_logps_and_entropies = fake_logps
        inputs = {
            "prompt_ids": torch.full((mb, 2), 2, dtype=torch.long),
            "prompt_mask": torch.ones((mb, 2), dtype=torch.long),
            "completion_ids": torch.full((mb, T), 3, dtype=torch.long),
            "completion_mask": torch.tensor(x["mask"][s]).long(),
            "advantages": torch.tensor(x["adv"][s]),
            "ref_per_token_logps": torch.tensor(x["ref"][s]),
            "num_items_in_batch": num_items,
        }
        if old_key is not None:
            inputs["old_per_token_logps"] = torch.tensor(x[old_key][s])
        for v in trainer._metrics["train"].values():
            v.clear()
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        losses.append(loss.item())
        grads.append(logp.grad.numpy().copy())
        keep = ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean")
        metrics.append({k2: v[-1] for k2, v in trainer._metrics["train"].items() if k2 in keep})
    return losses, np.concatenate(grads), metrics


def main():
    torch.manual_seed(0)
    x = make_inputs()
    src = Path(trl.__file__).parent / "trainer" / "grpo_trainer.py"
    golden = {
        "provenance": {
            "trl_version": trl.__version__,
            "trl_commit": "not recorded in the PyPI wheel; identify by grpo_trainer_sha256",
            "grpo_trainer_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "generator": "tests/golden/make_trl_golden.py",
        },
        "setup": dict(
            N=N, T=T, G=G, gradient_accumulation_steps=GAS, max_completion_length=MAX_LEN
        ),
        "inputs": {k: v.tolist() for k, v in x.items()},
        "cases": {},
    }
    for name, overrides, old_key in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trainer(overrides, tmp)
            losses, grad, metrics = run_case(trainer, x, old_key)
        golden["cases"][name] = {
            "trl_args": overrides,
            "old": old_key,
            "micro_losses": losses,
            "loss": float(np.sum(np.array(losses, np.float64))),
            "grad_logp": grad.tolist(),
            "micro_metrics": metrics,
        }
        print(f"{name:14s} loss={golden['cases'][name]['loss']:+.8f} micro={losses}")
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print("wrote", os.path.relpath(OUT))


if __name__ == "__main__":
    main()
