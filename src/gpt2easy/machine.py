"""What this machine offers, read without TensorFlow, and the fast paths that follow from it.

`--precision auto` and `--xla auto` are resolved here, once, from facts rather than from the README:
- Native bf16: a CPU with AVX-512 BF16 or AMX-BF16 (read from /proc/cpuinfo on Linux; on other systems
  we know of no cheap, reliable probe and answer no) or a GPU that TensorFlow sees. Without it bf16
  is emulated and fp32 is faster for training (bench/fastpath.md has the measured table).
- XLA for the training step pays on a CPU where element-wise work is a large share of the step
  (small models, whose 50257-way softmax and optimizer update it fuses); for the 124M shape it gains
  little after a long compile, and in bf16 it was slower than oneDNN's kernels. On a GPU it pays at
  every size and precision measured (124M on an H200: 1.7-2.0x the plain graph in fp32, 2.9-3.7x in
  bf16, after a 40-70 s first compile). See bench/fastpath.md.

`fp32` stays the exact reference: parity tests and bit-for-bit comparisons with other tools name it.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

logger = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Parameter count up to which XLA pays for the fp32 training step (measured: 4x256 demo preset,
# ~16M parameters, 1.20x; 124M: ~1.04x after a one-minute compile). See bench/fastpath.md.
XLA_MAX_PARAMS = 40_000_000


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_name() -> str:
    """The CPU's model name, for benchmark tables and logs."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16_cpu() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU (imports TensorFlow: call only where it is loaded anyway)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision: str, *, gpu: bool | None = None, log: bool = True) -> str:
    """`auto` -> `bf16` where bf16 is native (CPU flags or a GPU), else `fp32`; others unchanged.
    Logs the choice in one line unless `log` is False (the caller then states it itself, after
    its checks, so that a user error stays the only line a failed command prints)."""
    if precision != "auto":
        return precision
    gpu = has_gpu() if gpu is None else gpu
    chosen = "bf16" if gpu or native_bf16_cpu() else "fp32"
    if log:
        logger.info("precision auto: %s (%s)", chosen, precision_reason(chosen, gpu))
    return chosen


def precision_reason(chosen: str, gpu: bool) -> str:
    """Why `auto` chose `chosen`, in a few words."""
    return "a GPU" if gpu else ("native bf16 on this CPU" if chosen == "bf16" else "no native bf16 here")


def resolve_xla(xla, precision: str, n_params: int, *, gpu: bool | None = None,
                log: bool = True) -> bool:
    """`auto` -> XLA for the training step on a GPU, and on a CPU for the fp32 step of models up
    to XLA_MAX_PARAMS parameters (`gpu`, `log`: as for `resolve_precision`)."""
    if xla != "auto":
        return bool(xla)
    gpu = has_gpu() if gpu is None else gpu
    chosen = gpu or (precision == "fp32" and n_params <= XLA_MAX_PARAMS)
    if log:
        logger.info("xla auto: %s (%s, %s, %.0fM parameters)", "on" if chosen else "off",
                    "a GPU" if gpu else "CPU", precision, n_params / 1e6)
    return chosen
