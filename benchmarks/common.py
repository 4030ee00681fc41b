"""Shared pieces of the speed benchmarks: matmul peak, timing, machine line, results file.

Benchmarks are scripts, not tests: they print a table and rewrite their own section of
benchmarks/RESULTS.md. Run them on an otherwise idle machine; the machine line records the load
average at the start, because other processes on a 2-core box can halve any number here.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
_LOAD_AT_IMPORT = os.getloadavg() if hasattr(os, "getloadavg") else None


def block(x):
    """Waits for JAX arrays (any pytree); torch tensors and numbers pass through."""
    return jax.block_until_ready(x)


def timeit(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 5) -> dict:
    """Median / min / max seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        block(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        ts.append(time.perf_counter() - t0)
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "all": ts}


def timed_first_call(fn: Callable[[], object]) -> float:
    """Seconds of one call, e.g. the first call of a jitted function (trace + compile + run)."""
    t0 = time.perf_counter()
    block(fn())
    return time.perf_counter() - t0


def matmul_peak(n: int = 2048, repeats: int = 7) -> dict:
    """fp32 GFLOP/s of an n x n x n matmul, best of `repeats`, for JAX (XLA CPU) and torch.

    The best run, not the median: the peak is the ceiling the model FLOP/s is compared with.
    """
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    flops = 2 * n**3
    out = {"n": n, "jax": flops / timeit(lambda: mm(a, b), warmup=2, repeats=repeats)["min"] / 1e9}
    try:
        import torch
    except ImportError:
        return out
    ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))
    with torch.no_grad():
        out["torch"] = flops / timeit(lambda: ta @ tb, warmup=2, repeats=repeats)["min"] / 1e9
    out["torch_threads"] = torch.get_num_threads()
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line: CPU, cores, memory, library versions and the load average at the start."""
    parts = [f"{cpu_model()}, {os.cpu_count()} cores"]
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        parts.append(f"{pages * size / 2**30:.0f} GiB")
    except (ValueError, OSError):
        pass
    parts.append(f"python {platform.python_version()}, jax {jax.__version__} "
                 f"({jax.default_backend()})")  # fmt: skip
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        pass
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except ImportError:
        pass
    if _LOAD_AT_IMPORT is not None:
        parts.append("load average at start {:.1f}/{:.1f}/{:.1f}".format(*_LOAD_AT_IMPORT))
    return "; ".join(parts)


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats get 3 significant digits, large ones thousands separators."""

    def fmt(x):
        if isinstance(x, float):
            return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: str = RESULTS) -> None:
    """Replaces the section `## <name>` of the results file (or appends it), keeping the rest.

    The section carries the date, the machine line and the exact command that produced it.
    """
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (f"## {name}\n\n"
               f"- Date: {stamp}\n- Machine: {machine()}\n- Command: `{command()}`\n\n"
               f"{body.strip()}\n")  # fmt: skip
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n")
    print(f"wrote section {name!r} of {path}")


def matmul_params(cfg) -> int:
    """Parameters that take part in a matmul per token: all of them, except an untied input
    embedding (a lookup). With tied embeddings the one matrix is counted once, as the head."""
    from r1jax.models import count_params

    return count_params(cfg) - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model)


def flops_per_token(cfg, context: float) -> float:
    """Model FLOPs of one token that attends to `context` positions (itself included):
    2 * matmul_params (weights) + 4 * L * H * Dh * context (q.k and p.v)."""
    return 2 * matmul_params(cfg) + 4 * cfg.n_layers * cfg.n_heads * cfg.head_dim * context
