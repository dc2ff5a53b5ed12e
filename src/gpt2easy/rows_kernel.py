"""Native kernels for bf16 batches, called from inside XLA's compiled programs: a few rows times a
bf16 matrix (`matmul`), and one new query per row over a bf16 key/value cache (`attend`).

Why: a bf16 generation step with more than one row (`--batch_size 8`, `--prompts_file`, the
server's batches) multiplies every weight matrix by a few rows. XLA's CPU code does that well in
float32 and for one row in bf16, but for more than one bf16 row it first converts the whole matrix
to float32, so `generate` has so far kept float32 copies of the weights for batches: twice the bf16
bytes to read per token, and batch 8 at only about 2-3x the tokens/s of batch 1. `rows_kernel.cc`
reads each bf16 matrix once for all rows (AVX-512 BF16 dot products, the next rows prefetched, the
columns shared among the cores): measured here (Zen 4, 2 cores), the 49 matrices of 124M for 8
rows in 15 ms against 12 ms for one row, where the float32 copies took about twice that. The
attention kernel reads each row's own cache positions in place, where XLA copied cache slices.

How: the C++ source ships with the package and is compiled on first use with the system's C++
compiler (`$CXX`, else `g++`, about 2 s) into `$GPT2EASY_CACHE/native/` (named by a hash of the
source and the compiler's version, so a changed file or compiler builds anew), then loaded and
registered with XLA as the custom calls `gpt2easy_bf16_rows` and `gpt2easy_bf16_attend`. It links
nothing: TensorFlow's registry is found in its already loaded library. `matmul` and `attend` emit
the calls in a compiled function.

When: `available()` is true on a CPU with AVX-512 BF16 (where `--precision auto` picks bf16) when
the build and registration worked and `GPT2EASY_ROWS_KERNEL` is not `0`; otherwise generation keeps
its float32 copies (one line in the log says why). Not on GPUs (a custom call registered for the
host only). The sums are those of a matmul in another order: a batch row gives the tokens it gives
alone, up to near-ties (as before, tested).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .compile_cache import cache_root
from .machine import cpu_flags, has_gpu, usable_cores

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("rows_kernel.cc")
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-pthread"]
NEEDED = ("avx512_bf16", "avx512bw")  # /proc/cpuinfo's names


def compiler() -> str | None:
    """The C++ compiler to build with: `$CXX`, else `g++` or `c++` on the PATH; None if none."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(cxx: str, folder: Path) -> Path:
    """The compiled library for this source and compiler, built into `folder` if not there yet
    (written under a temporary name and renamed: a concurrent or interrupted build never leaves a
    partial file). Raises RuntimeError with the compiler's message if it fails."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(FLAGS).encode())
    target = folder / f"rows_kernel-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        done = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", tmp, "-ldl"], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{cxx} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def tensorflow_library() -> str:
    """The path of TensorFlow's library that holds XLA (and its custom-call registry)."""
    import tensorflow as tf

    return os.path.join(tf.sysconfig.get_lib(), "libtensorflow_cc.so.2")


@functools.cache
def stamp() -> str:
    """Ends every call's opaque string: the library's file and where this process loaded it.
    TensorFlow's persistent XLA cache keys a program by its text, and a program with these calls
    loaded from it by another process crashed (the calls pointed at the first process's copy of
    the kernel): with the stamp, another process compiles its own (the step, a few seconds)."""
    lib = load()
    return f"{Path(lib._name).name}@{ctypes.cast(lib.gpt2easy_bf16_rows, ctypes.c_void_p).value:x}"


@functools.cache
def load() -> ctypes.CDLL:
    """Build (if needed), load and register the kernel; returns the library. Raises RuntimeError
    saying why it cannot."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (set CXX, or install g++)")
    lib = ctypes.CDLL(str(build(cxx, cache_root() / "native")))
    lib.gpt2easy_register.argtypes = [ctypes.c_char_p, ctypes.c_int]
    if lib.gpt2easy_register(tensorflow_library().encode(), min(16, usable_cores())) != 0:
        raise RuntimeError("XLA's custom-call registry was not found in TensorFlow's library")
    return lib


def use_plain(plain: bool) -> bool:
    """Compute in plain C++ (True: what tests compare the AVX-512 path with) or the fast way
    where the CPU has it (False, the default); returns whether calls now take the AVX-512 path."""
    lib = load()
    lib.gpt2easy_use_plain(int(plain))
    return bool(lib.gpt2easy_rows_avx512())


def cpu_ok() -> bool:
    """Whether this CPU has what the fast path needs (AVX-512 BF16)."""
    return all(flag in cpu_flags() for flag in NEEDED)


@functools.cache
def available() -> bool:
    """Whether bf16 batches use the kernel here (see the module docstring). Logs why not once,
    at info level where the CPU would have used it."""
    if os.environ.get("GPT2EASY_ROWS_KERNEL", "1") == "0" or not cpu_ok():
        return False
    if has_gpu():
        return False
    try:
        load()
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        logger.info("bf16 batches run on float32 copies of the weights: the native kernel is "
                    "unavailable (%s)", e)  # fmt: skip
        return False
    return True


def _custom_call(target: str, operands: list, config: str, shape: list):
    """The float32 result of `shape` of the named kernel, as an XLA custom call in a compiled
    function; `config` is the call's opaque text (its sizes), stamped (see `stamp`)."""
    import tensorflow as tf
    from tensorflow.compiler.tf2xla.ops import gen_xla_ops

    (y,) = gen_xla_ops.xla_custom_call_v2(
        operands, call_target_name=target, backend_config=f"{config} {stamp()}",
        has_side_effect=False, result_dtypes=[tf.float32], result_shapes=[shape],
    )  # fmt: skip
    return y


def matmul(x, w):
    """x bf16 [rows, in] times w bf16 `[out, in]` (the matrix transposed) -> float32 [rows, out],
    as an XLA custom call: only inside a function compiled with `jit_compile=True`, after
    `load()`."""
    import tensorflow as tf

    rows, inner = x.shape
    out, inner_w = w.shape
    if x.dtype != tf.bfloat16 or w.dtype != tf.bfloat16 or inner != inner_w:
        raise ValueError(f"need bf16 [rows, in] and [out, in], got {x.dtype} {x.shape}, "
                         f"{w.dtype} {w.shape}")  # fmt: skip
    return _custom_call("gpt2easy_bf16_rows", [x, w], f"{rows} {inner} {out}", [rows, out])


def attend(q, keys, values, pos, offset, scale: float):
    """One new query per row over its own cache positions, as an XLA custom call (bf16):
    q [rows, head, head_dim], keys/values `[rows, head, cache_len, head_dim]` (the cache: bf16,
    or their uint16 bit patterns), `pos` int32 [] the newest position, `offset` int32 [rows]:
    row r attends to positions offset[r] .. pos only (no slice is copied, nothing past `pos` is
    read). -> float32 [rows, head * head_dim], rounded to bf16 where the compiled bf16 attention
    rounds (the scores, the probabilities, the output)."""
    import tensorflow as tf

    rows, heads, cache_len, dim = keys.shape
    same = values.dtype == keys.dtype and values.shape == keys.shape
    if keys.dtype not in (tf.bfloat16, tf.uint16) or not same:
        raise ValueError(f"need bf16 keys and values of one shape, got {keys.dtype} {keys.shape}, "
                         f"{values.dtype} {values.shape}")  # fmt: skip
    q = tf.cast(tf.reshape(q, [rows, heads, dim]), tf.bfloat16)
    operands = [q, keys, values, tf.cast(pos, tf.int32), tf.cast(offset, tf.int32)]
    config = f"{rows} {heads} {cache_len} {dim} {scale!r}"
    return _custom_call("gpt2easy_bf16_attend", operands, config, [rows, heads * dim])
