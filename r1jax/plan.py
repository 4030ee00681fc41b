"""The memory planner: bytes per device of a GRPO run, from abstract shapes only.

`plan(cfg, mesh, settings, target)` sizes each component on one device of a hypothetical mesh
(shardings from sharding.logical_to_spec on an AbstractMesh; nothing is allocated). `recommend`
tries the meshes a target allows; `check` turns a plan into an error or warnings.

What is counted (c = bytes of cfg.dtype, p = bytes of cfg.param_dtype):
  params      the parameters (p), sharded by sharding.RULES with its divisibility fallback (a
              MoE's routed experts over the expert axis and their other dims).
  opt_state   `optimizer.init` (default optax.adamw: mu and nu in the params' dtype, a count),
              each leaf sharded like its parameter (via optax.tree_map_params).
  grads       the update's float32 accumulation buffer (r1jax/update.py) plus the micro-batch
              gradient (p) added into it; both sharded like the parameters.
  ref_params  a second copy of the parameters when beta > 0.
  kv_cache    the sampler's cache (c): k and v of each prompt's prefix [L,B,K,Dh,P] and each
              row's suffix [L,N,K,Dh,T'] (T' = max_new_tokens rounded up to the decode chunk).
              Rows follow the prompts, split over the batch axes like any "batch" dimension
              (rollout.prompt_sharding); kv heads over tensor when K divides. With decode
              slots (Settings.slots, a continuous-batching sampler) the cache is instead
              [L,slots,K,Dh,P+T'] (an upper bound: a group's slots may share the prompt).
  sampler     the rest of the rollout's peak, the larger of the prefill of one layer (B prompts
              of P tokens, fp32 scores included; with Settings.prefill_chunk C, C query
              tokens against the P keys; with prefill_group g, g prompts at a time, lazily in
              the continuous sampler) and the last decode-phase switch: the previous
              suffix (~T'/2, live while copied into the larger one), three [N,V] fp32 logits
              buffers and the [N,T'] token and log-prob buffers.
  activations the peak of one training micro-batch's forward and backward: n rows per device
              (micro_batch over the batch axes, logical_to_spec's fallback), S = P + T, Hq, Kt,
              Ft the q heads, kv heads and MLP width per device. Per layer
                lin = n*S*(3*D*c + 4*D + 3*(Hq+Kt)*Dh*c + 2*Ft*c)   residual, norm output, MLP
                      input, an fp32 norm temporary; q,k,v, rotated q,k, attention output; the
                      MLP's gate and up projections (its other values are rematerialised)
                att = n*Hq*S^2*(4 + c)     the fp32 softmax and its cast, kept for p @ v
                scores = n*Hq*S^2*4        the fp32 scores (forward) or their cotangent
                w   = the layer's weights in c, gathered over fsdp (sharded over tensor; a
                      MoE layer's routed experts also over expert: E/expert per device)
              A MoE layer's Ft is its shared experts' width, and lin adds the routed experts
              in the gather form (moe.routed_experts): the expert group's n*e*S tokens
              (e = the expert axis) gathered (c) and their fp32 sum, and for each of their k
              assignments (static shapes: all n*e*S*k, not only those to local experts) the
              sorted input and output rows (2*D*c) and the gate, up and product (3*Fe_t*c).
              Dense and MoE layers are counted each with their own terms.
              saved (what the forward keeps) and work (one layer's backward pass):
                no remat: saved = L*(lin + att) (+ all layers' c weight casts when c != p),
                          work = lin + 2*scores + 2*w (scores and their cotangent; weights
                          and their gradient)
                remat:    saved = L*n*S*D*c (each layer's input),
                          work = lin + att + scores + 2*w (the layer recomputed; the score
                          cotangent reuses the recomputed scores' buffer)
              activations = saved + [n,S,S] bool mask + max(work, logprobs) (the head's backward
              runs before the layers'). cfg.remat picks the one in the total; both are reported.
              These S^2 terms are the dense attention path's. The path is the model's
              (attention.choose for cfg.attention, S and the target's platform); the blocked
              path and the fused kernels keep per layer, instead of att, the output and its
              fp32 log-sum-exp plus blocked copies of q, k, v (n*S*(Hq*(Dh*c+4) + (Hq+2Kt)*Dh*c));
              their scores are four fp32 [n,Hq,bq,bk] blocks (scores, probabilities and their
              cotangents) and the fp32 dq accumulator [n,S,Hq,Dh]; the mask is the [n,S] segment
              ids, except for cuDNN, which reads the mask as an [n,1,S,S] bias (c).
  logprobs    the log-prob head on the T completion positions: the final norm's [n,S,D] (c and
              fp32), [n,T,D] hidden states and their cotangent, three fp32 [n,T,chunk] tensors
              ([n,T,V] when V <= vocab_chunk) and, when chunked, the chunked unembedding's gradient
              and its padded c copy unless that is a reshape (split like the vocabulary), and
              the chunk carries.

Total = params + opt_state + ref_params + max(kv_cache + sampler, grads + activations): rollout
and update do not overlap in time. Not counted: the optimizer update's temporaries, the scorer's
forward passes (smaller than the update), XLA's scratch and fragmentation; on GPUs JAX
preallocates 75% of memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.

Against XLA's `memory_analysis()` on the CPU at small float32 shapes (tests/test_plan.py), the
activation estimate is 0.86-1.09x of temp_size on one device and on data/tensor-parallel meshes
(bfloat16 on the CPU: ~0.7x, which computes bf16 matmuls via fp32 temporaries). With fsdp > 1
the CPU compile is up to ~2x larger: it runs the embedding lookup and the log-prob head on the
whole micro-batch rather than its batch shard (no sharding constraint on the hidden states).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re

import jax
import jax.numpy as jnp
import optax

from r1jax import sharding as shd
from r1jax.models import attention
from r1jax.models import transformer as tfm
from r1jax.models.config import ModelConfig, check_context

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Settings:
    """The GRPO settings that size memory. prompt_len is the padded (bucketed) length."""

    num_prompts: int = 32  # B
    group_size: int = 16  # G
    prompt_len: int = 1024  # P
    max_new_tokens: int = 31_744  # T
    micro_batch: int = 8  # rows per forward/backward, over the whole mesh
    beta: float = 0.001  # > 0 keeps a reference model
    vocab_chunk: int = 8192
    decode_chunk: int = 32  # rollout.chunk: T is padded to a multiple of it
    # Decode slots of a continuous-batching sampler (rows decoded at once, over the whole mesh);
    # 0: the static sampler, which decodes all B*G rows at once.
    slots: int = 0
    # sampling.prefill_chunk (prompt tokens per prefill forward; 0: the whole prompt) and
    # sampling.prefill_group (prompts prefilled at once by the continuous sampler; 0: all).
    prefill_chunk: int = 0
    prefill_group: int = 0

    def __post_init__(self):
        if self.slots < 0:
            raise ValueError(f"Settings.slots must be >= 0, got {self.slots}")
        for f in dataclasses.fields(self):
            if f.name in ("prefill_chunk", "prefill_group") and getattr(self, f.name) < 0:
                raise ValueError(f"Settings.{f.name} must be >= 0, got {getattr(self, f.name)}")
            skip = ("beta", "slots", "prefill_chunk", "prefill_group")
            if f.name not in skip and getattr(self, f.name) <= 0:
                raise ValueError(f"Settings.{f.name} must be positive, got {getattr(self, f.name)}")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    kind: str  # device kind, e.g. "TPU v5p"
    num_devices: int  # chips (TPU) or GPUs
    memory_bytes: int  # per device
    per_host: int  # devices per host


# kind, devices per host, memory per device. v5p: 95 GiB HBM per chip, and its slice suffix
# counts TensorCores (2 per chip): v5p-128 is 64 chips. v5e/v6e suffixes count chips (16 and
# 32 GiB); slices up to 8 chips are one host, larger ones have 4 chips per host. H100: 80 GiB;
# H200: 141 GB nominal, taken as 141e9 bytes (nvidia-smi shows a little more).
_TARGETS = {
    "v5p": ("TPU v5p", 4, 95 * GiB),
    "v5e": ("TPU v5e", 4, 16 * GiB),
    "v6e": ("TPU v6e", 4, 32 * GiB),
    "h100": ("H100", 8, 80 * GiB),
    "h200": ("H200", 8, 141 * 10**9),
}


def target(name: str) -> Target:
    """Parses "v5p-N" (N TensorCores), "v5e-N", "v6e-N" (N chips), "h100xN", "h200xN", "cpu"."""
    if name == "cpu":
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return Target(name, "cpu", 1, mem, 1)
    m = re.fullmatch(r"(v5p|v5e|v6e)-(\d+)|(h100|h200)x(\d+)", name)
    if not m:
        raise ValueError(f"target {name!r}: expected v5p-N, v5e-N, v6e-N, h100xN, h200xN or cpu")
    family, n = (m[1], int(m[2])) if m[1] else (m[3], int(m[4]))
    if n <= 0 or (family == "v5p" and n % 2):
        raise ValueError(f"target {name!r}: bad size {n} (v5p counts 2 TensorCores per chip)")
    kind, per_host, mem = _TARGETS[family]
    chips = n // 2 if family == "v5p" else n
    per_host = chips if family in ("v5e", "v6e") and chips <= 8 else min(per_host, chips)
    if chips % per_host:
        raise ValueError(f"target {name!r}: {chips} devices do not fill hosts of {per_host}")
    return Target(name, kind, chips, mem, per_host)


_target = target  # the functions below take a parameter named `target`


def abstract_mesh(shape: dict[str, int]) -> jax.sharding.AbstractMesh:
    """A device-free mesh over MESH_AXES; axes not named have size 1."""
    bad = set(shape) - set(shd.MESH_AXES)
    if bad:
        raise ValueError(f"mesh axes {sorted(bad)} unknown; expected {shd.MESH_AXES}")
    return jax.sharding.AbstractMesh(
        tuple(int(shape.get(a, 1)) for a in shd.MESH_AXES), shd.MESH_AXES
    )


def _local_shape(axes, shape, mesh) -> list[int]:
    """Per-device shape of a tensor with the given logical axes."""
    out = []
    for dim, entry in zip(shape, shd.logical_to_spec(axes, shape, mesh)):
        names = () if entry is None else ((entry,) if isinstance(entry, str) else entry)
        out.append(dim // math.prod(mesh.shape[a] for a in names))
    return out


def _local(axis: str, dim: int, mesh) -> int:
    return _local_shape((axis,), (dim,), mesh)[0]


def _shard_bytes(shape, dtype, axes, mesh) -> int:
    return math.prod(_local_shape(axes, shape, mesh)) * jnp.dtype(dtype).itemsize


def param_bytes(cfg: ModelConfig, mesh, dtype=None, parts: tuple[str, ...] = ()) -> int:
    """Bytes per device of the parameters (or a like-sharded tree in `dtype`); `parts`: only
    those top-level entries (e.g. ("layers", "moe_layers"))."""
    specs = tfm.param_specs(cfg)
    specs = {k: specs[k] for k in parts if k in specs} if parts else specs
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, tfm.ParamSpec))
    dtype = dtype or cfg.param_dtype
    return sum(_shard_bytes(s.shape, dtype, s.axes, mesh) for s in leaves)


def opt_state_bytes(cfg: ModelConfig, mesh, optimizer=None) -> int:
    """Bytes per device of optimizer.init(params), each state leaf sharded like its parameter."""
    if optimizer is None:
        optimizer, state = optax.adamw(1e-3), _adamw_state(cfg)
    else:
        state = jax.eval_shape(optimizer.init, tfm.abstract_params(cfg))
    sizes = optax.tree_map_params(
        optimizer,
        lambda x, spec: _shard_bytes(x.shape, x.dtype, spec.axes, mesh),
        state,
        tfm.param_specs(cfg),
        transform_non_params=lambda x: math.prod(x.shape) * x.dtype.itemsize,
        is_leaf=lambda x: isinstance(x, tfm.ParamSpec),
    )
    return sum(jax.tree.leaves(sizes))


@functools.lru_cache(maxsize=16)
def _adamw_state(cfg: ModelConfig):
    return jax.eval_shape(optax.adamw(1e-3).init, tfm.abstract_params(cfg))


def kv_cache_bytes(cfg: ModelConfig, mesh, s: Settings) -> int:
    """Prefix [L,B,K,Dh,P] + suffix [L,N,K,Dh,T'] caches (k and v) and their small fields; with
    decode slots, [L,slots,K,Dh,P+T'] (a prompt and its completion per slot: an upper bound,
    since sharing a prompt across its group's slots only lowers it)."""
    b, t_pad = _local("batch", s.num_prompts, mesh), _t_pad(s)
    kt, c = _local("kv_heads", cfg.n_kv_heads, mesh), jnp.dtype(cfg.dtype).itemsize
    per_pos = 2 * cfg.n_layers * kt * cfg.head_dim * c
    if cfg.kv_lora_rank:  # MLA: the latent and the RoPE key, replicated over heads' devices
        per_pos = cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_dim) * c
    if s.slots:
        return _local("batch", s.slots, mesh) * (s.prompt_len + t_pad) * (per_pos + 1)
    prefix = b * s.prompt_len * (per_pos + 1) + b * 4  # + bool mask, int32 length
    return prefix + b * s.group_size * t_pad * per_pos + 4  # + int32 index


def _t_pad(s: Settings) -> int:
    return -(-s.max_new_tokens // s.decode_chunk) * s.decode_chunk


def platform_of(target: Target) -> str:
    """The JAX platform of a target's devices ("tpu", "gpu" or "cpu"), for attention.choose."""
    kind = target.kind.lower()
    return "tpu" if kind.startswith("tpu") else ("cpu" if kind == "cpu" else "gpu")


def _layer_kinds(cfg: ModelConfig) -> list[tuple[int, bool]]:
    """(number of layers, is MoE) of the model's dense and MoE layers that it has."""
    moe = cfg.n_layers - cfg.first_k_dense if cfg.n_experts else 0
    return [(k, m) for k, m in ((cfg.n_layers - moe, False), (moe, True)) if k]


def _layer(
    cfg: ModelConfig, mesh, n: int, S: int, platform: str = "cpu", moe: bool = False, keys=None
) -> dict[str, int]:
    """Terms of one (dense or MoE) layer at n rows of S queries attending to `keys` positions
    (default S: self-attention; a prefill chunk attends to the cache so far) (module docstring)."""
    K = keys or S
    c = jnp.dtype(cfg.dtype).itemsize
    D, Dh = cfg.d_model, cfg.head_dim
    hq, kt = _local("q_heads", cfg.n_heads, mesh), _local("kv_heads", cfg.n_kv_heads, mesh)
    ft = _local("mlp", cfg.n_shared_experts * cfg.moe_d_ff if moe else cfg.d_ff, mesh)
    # weights gathered over fsdp; experts stay split over the expert axis
    gathered = abstract_mesh({"tensor": mesh.shape["tensor"], "expert": mesh.shape["expert"]})
    count = {m: k for k, m in _layer_kinds(cfg)}[moe]
    part = "moe_layers" if moe else "layers"
    routed = 0
    if moe:  # the gather form: the expert group's tokens, k assignments each (static shapes)
        group, fe = n * S * mesh.shape["expert"], _local("mlp", cfg.moe_d_ff, mesh)
        routed = group * D * (c + 4) + group * cfg.n_experts_per_tok * (2 * D * c + 3 * fe * c)
    path = attention.choose(
        cfg.attention, K, cfg.attention_block_kv, Dh, Dh, cfg.dtype, platform, mesh.size
    )
    if path == "dense":
        att, scores, mask = n * hq * S * K * (4 + c), n * hq * S * K * 4, n * S * K
    else:  # blocked and the fused kernels: see the module docstring
        bq, bk = min(cfg.attention_block_q, S), min(cfg.attention_block_kv, K)
        att = n * S * hq * (Dh * c + 4) + n * S * (hq + 2 * kt) * Dh * c
        scores = 4 * n * hq * bq * bk * 4 + n * S * hq * Dh * 4
        mask = n * S * K * c if path == "cudnn" else n * S * 4
    return {
        "lin": n * S * (3 * D * c + 4 * D + 3 * (hq + kt) * Dh * c + 2 * ft * c) + routed,
        "att": att,
        "scores": scores,
        "weights": param_bytes(cfg, gathered, cfg.dtype, (part,)) // count,
        "mask": mask,
    }


def activation_bytes(cfg: ModelConfig, mesh, s: Settings, remat: bool, platform="cpu") -> int:
    """Peak activations of one training micro-batch, log-prob head included: what the forward
    pass saves, plus the larger of the head's peak and one layer's backward pass."""
    n, S = _local("batch", s.micro_batch, mesh), s.prompt_len + s.max_new_tokens
    lays = [(k, _layer(cfg, mesh, n, S, platform, moe)) for k, moe in _layer_kinds(cfg)]
    # fp32 scores; the weights and their gradient; remat: the layer recomputed (the score
    # cotangent reuses its buffer), else the score cotangent and linear-size cotangents
    work = max(
        lay["scores"] + 2 * lay["weights"] + lay["lin"] + (lay["att"] if remat else lay["scores"])
        for _, lay in lays
    )
    if remat:
        saved = cfg.n_layers * n * S * cfg.d_model * jnp.dtype(cfg.dtype).itemsize
    else:
        layers = ("layers", "moe_layers")
        casts = param_bytes(cfg, mesh, cfg.dtype, layers) if cfg.dtype != cfg.param_dtype else 0
        saved = sum(k * (lay["lin"] + lay["att"]) for k, lay in lays) + casts
    return saved + lays[0][1]["mask"] + max(work, logprob_bytes(cfg, mesh, s))


def logprob_bytes(cfg: ModelConfig, mesh, s: Settings) -> int:
    """The final norm and the chunked log-prob head (and entropy) of one micro-batch."""
    n, T = _local("batch", s.micro_batch, mesh), s.max_new_tokens
    S = s.prompt_len + T
    c, D, V = jnp.dtype(cfg.dtype).itemsize, cfg.d_model, cfg.vocab_size
    out = n * S * D * (c + 4) + 2 * n * T * D * c
    if V <= s.vocab_chunk:
        return out + 3 * n * T * V * 4
    chunks = -(-V // s.vocab_chunk)
    # The chunked [V',D] unembedding's gradient, and its copy unless it is a mere reshape.
    copies = 1 + (cfg.dtype != cfg.param_dtype or V % s.vocab_chunk != 0)
    w_copy = copies * chunks * s.vocab_chunk * D * c * _local("vocab", V, mesh) // V
    return out + 3 * n * T * s.vocab_chunk * 4 + w_copy + chunks * 4 * n * T * 4


def sampler_bytes(cfg: ModelConfig, mesh, s: Settings, platform: str = "cpu") -> int:
    """The rollout's peak besides the KV cache: prefill of one layer, or the last phase switch
    (with decode slots the cache does not grow: the slots' logits and the output buffers)."""
    b, t_pad, c = _local("batch", s.num_prompts, mesh), _t_pad(s), jnp.dtype(cfg.dtype).itemsize
    n = b * s.group_size
    kt = _local("kv_heads", cfg.n_kv_heads, mesh)
    prev = -(-t_pad // 2 // s.decode_chunk) * s.decode_chunk if t_pad > s.decode_chunk else 0
    grow = 2 * cfg.n_layers * n * kt * cfg.head_dim * prev * c
    rows = _local("batch", s.slots, mesh) if s.slots else n
    logits = 3 * rows * _local("vocab", cfg.vocab_size, mesh) * 4
    switch = (0 if s.slots else grow) + logits + n * t_pad * 8
    return max(prefill_bytes(cfg, mesh, s, platform), switch)


def prefill_bytes(cfg: ModelConfig, mesh, s: Settings, platform: str = "cpu") -> int:
    """The prefill of one layer: B prompts of P tokens; chunks of C = prefill_chunk queries
    against the P keys; g = prefill_group prompts at a time (the continuous sampler's lazy
    prefill). The cache it writes is kv_cache's."""
    g = min(s.prefill_group or s.num_prompts, s.num_prompts) if s.slots else s.num_prompts
    P, b = s.prompt_len, max(1, _local("batch", g, mesh))
    C = min(s.prefill_chunk or P, P)
    pre = [_layer(cfg, mesh, b, C, platform, moe, P) for _, moe in _layer_kinds(cfg)]
    return max(p["lin"] + p["att"] + p["scores"] + p["weights"] + p["mask"] for p in pre)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Bytes per device of each component, on `mesh` of `target`."""

    label: str
    target: Target
    mesh: dict[str, int]
    remat: bool
    params: int
    opt_state: int
    grads: int
    ref_params: int
    kv_cache: int
    sampler: int
    activations_remat: int
    activations_no_remat: int
    logprobs: int

    @property
    def activations(self) -> int:
        return self.activations_remat if self.remat else self.activations_no_remat

    @property
    def rollout(self) -> int:
        return self.kv_cache + self.sampler

    @property
    def update(self) -> int:
        return self.grads + self.activations

    @property
    def total(self) -> int:
        return self.params + self.opt_state + self.ref_params + max(self.rollout, self.update)

    @property
    def device_memory(self) -> int:
        return self.target.memory_bytes

    @property
    def fits(self) -> bool:
        return self.total <= self.device_memory


def plan(
    cfg: ModelConfig,
    mesh: dict[str, int],
    settings: Settings,
    target: Target | str,
    *,
    optimizer=None,
    label: str = "",
) -> Plan:
    """Per-device memory of a GRPO run of `cfg` on `mesh` (axis -> size) of `target`."""
    tgt = _target(target) if isinstance(target, str) else target
    check_context(cfg, settings.prompt_len, settings.max_new_tokens, label)
    am = abstract_mesh(mesh)
    if am.size != tgt.num_devices:
        raise ValueError(f"mesh {mesh} has {am.size} devices; {tgt.name} has {tgt.num_devices}")
    params, pf = param_bytes(cfg, am), platform_of(tgt)
    return Plan(
        label=label,
        target=tgt,
        # the expert axis is reported only when used (MoE)
        mesh={a: am.shape[a] for a in shd.MESH_AXES if a != "expert" or am.shape[a] > 1},
        remat=cfg.remat,
        params=params,
        opt_state=opt_state_bytes(cfg, am, optimizer),
        grads=param_bytes(cfg, am, "float32") + params,
        ref_params=params if settings.beta > 0 else 0,
        kv_cache=kv_cache_bytes(cfg, am, settings),
        sampler=sampler_bytes(cfg, am, settings, pf),
        activations_remat=activation_bytes(cfg, am, settings, True, pf),
        activations_no_remat=activation_bytes(cfg, am, settings, False, pf),
        logprobs=logprob_bytes(cfg, am, settings),
    )


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"


def check(p: Plan) -> list[str]:
    """Raises when parameters + optimizer state alone exceed device memory; else warnings."""
    mem = p.device_memory
    if p.params + p.opt_state > mem:
        raise ValueError(
            f"{p.label or 'model'} on {p.target.name} mesh {p.mesh}: params {_gib(p.params)} GiB"
            f" + opt_state {_gib(p.opt_state)} GiB exceed device memory {_gib(mem)} GiB"
        )
    if p.total <= mem:
        return []
    warnings = [
        f"total {_gib(p.total)} GiB > device memory {_gib(mem)} GiB (params {_gib(p.params)},"
        f" opt {_gib(p.opt_state)}, ref {_gib(p.ref_params)}, rollout {_gib(p.rollout)},"
        f" update {_gib(p.update)})"
    ]
    if not p.remat and p.activations_remat < p.activations_no_remat:
        warnings.append(
            f"remat is off: activations {_gib(p.activations_no_remat)} GiB, with remat "
            f"{_gib(p.activations_remat)} GiB"
        )
    return warnings


def candidate_meshes(cfg: ModelConfig, tgt: Target) -> list[dict[str, int]]:
    """data across hosts, fsdp and tensor within: tensor in {1,2,4,8} dividing the heads and
    the devices of a host, data any divisor of the host count, fsdp the rest; for a MoE also
    expert, a power of two dividing the experts, taken from fsdp's share."""
    hosts = tgt.num_devices // tgt.per_host
    experts = [e for e in (2**i for i in range(11)) if cfg.n_experts % e == 0]
    out = []
    for t in (1, 2, 4, 8):
        if t > tgt.per_host or tgt.per_host % t or cfg.n_heads % t:
            continue
        for d in (d for d in range(1, hosts + 1) if hosts % d == 0):
            rest = tgt.num_devices // (d * t)
            for e in (e for e in (experts if cfg.n_experts else [1]) if rest % e == 0):
                out.append({"data": d, "fsdp": rest // e, "tensor": t, "expert": e})
    return out


def recommend(
    cfg: ModelConfig, target: Target | str, settings: Settings, *, optimizer=None, label=""
) -> tuple[Plan, str]:
    """The feasible candidate mesh with the least memory (else the least-memory one), and why.

    A mesh is feasible when it fits and the micro-batch splits evenly over its batch shards
    (data*fsdp), which the trainer requires."""
    tgt = _target(target) if isinstance(target, str) else target
    plans = [
        plan(cfg, m, settings, tgt, optimizer=optimizer, label=label)
        for m in candidate_meshes(cfg, tgt)
    ]
    shards = lambda p: p.mesh["data"] * p.mesh["fsdp"] * p.mesh.get("expert", 1)  # noqa: E731
    splits = lambda p: settings.micro_batch % shards(p) == 0  # noqa: E731
    # Least memory first; on a tie more data parallelism, less tensor and expert parallelism.
    best = min(
        plans,
        key=lambda p: (
            (not splits(p), not p.fits, p.total, -p.mesh["data"], p.mesh["tensor"])
            + (p.mesh.get("expert", 1),)
        ),
    )
    mesh = ",".join(f"{a}={n}" for a, n in best.mesh.items())
    if not splits(best):
        least = min(shards(p) for p in plans)
        why = (
            f"no mesh takes micro_batch={settings.micro_batch}: every candidate has at least "
            f"{least} batch shards; least memory {_gib(best.total)} GiB on {mesh}"
        )
    elif best.fits:
        why = f"fits: {_gib(best.total)} of {_gib(best.device_memory)} GiB on {mesh}"
    else:
        fixed = best.params + best.opt_state + best.ref_params
        parts = {"params+opt+ref": fixed, "rollout": best.rollout, "update": best.update}
        worst = max(parts, key=parts.get)
        why = (
            f"nothing fits: least is {_gib(best.total)} > {_gib(best.device_memory)} GiB on "
            f"{mesh}; largest part {worst} {_gib(parts[worst])} GiB"
        )
    return best, why + f" ({len(plans)} meshes tried)"


_HEADS = "params opt grads ref kv sampler act act-remat act-full logp total memory".split()
_FIELDS = (
    "params opt_state grads ref_params kv_cache sampler activations activations_remat "
    "activations_no_remat logprobs total device_memory"
).split()


def format_table(plans) -> str:
    """A plain-text table (GiB per device) of plans, one per line."""
    head = ["model", "target", "data/fsdp/tensor", *_HEADS, "fits"]
    rows = [
        [
            p.label,
            p.target.name,
            "/".join(str(p.mesh[a]) for a in ("data", "fsdp", "tensor"))
            + (f" x{p.mesh['expert']} experts" if "expert" in p.mesh else ""),
            *(_gib(getattr(p, f)) for f in _FIELDS),
            "yes" if p.fits else "NO",
        ]
        for p in plans
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(x.rjust(w) for x, w in zip(r, widths)) for r in [head, *rows]]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])


def settings_of(config) -> Settings:
    """The Settings of a GRPO config (r1jax/configs/r1zero.py's keys; sampling.slots if the
    config has it)."""
    s = config.sampling
    return Settings(
        num_prompts=s.num_prompts,
        group_size=s.num_samples,
        prompt_len=min(1 << max(0, (s.max_prompt_len - 1).bit_length()), s.max_prompt_len),
        max_new_tokens=s.max_new_tokens,
        micro_batch=config.micro_batch,
        beta=float(config.rl.beta),
        vocab_chunk=config.vocab_chunk,
        decode_chunk=s.chunk,
        slots=int(s.get("slots", 0) or 0),
        prefill_chunk=int(s.get("prefill_chunk", 0) or 0),
        prefill_group=int(s.get("prefill_group", 0) or 0),
    )


def this_machine(mesh) -> Target:
    """The devices of a live mesh as a Target (memory from the runtime, or RAM on CPU)."""
    dev = mesh.local_devices[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    local = max(1, len(mesh.local_devices))
    if stats and stats.get("bytes_limit"):
        mem = int(stats["bytes_limit"])
    else:  # CPU: the host's memory, shared by its devices
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // local
    return Target("this machine", dev.device_kind, mesh.size, mem, local)
