"""rows_kernel: the native bf16 kernels that bf16 batches call from inside XLA programs.

Checked against NumPy (float64 sums of the same bf16 values, the same roundings), in both the
AVX-512 BF16 code and the plain C++ code; and in the generator: a bf16 batch gives the tokens of
the float32-copies path, and the persistent XLA cache never hands one process's calls to another.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import rows_kernel
from gpt2easy.generate import Controls, Generator
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2

pytestmark = pytest.mark.skipif(
    not rows_kernel.cpu_ok(), reason="needs a CPU with AVX-512 BF16 (the only place it is used)"
)


def bf16(a) -> np.ndarray:
    """float64 values rounded to bf16, back as float64."""
    return tf.cast(tf.cast(np.asarray(a, np.float32), tf.bfloat16), tf.float64).numpy()


@pytest.fixture(params=["avx512", "plain"])
def path(request):
    assert rows_kernel.available(), "g++ and AVX-512 BF16 are here: the kernel must load"
    fast = rows_kernel.use_plain(request.param == "plain")
    assert fast == (request.param == "avx512")
    yield request.param
    rows_kernel.use_plain(False)


@pytest.mark.parametrize("rows, inner, out", [(8, 768, 2304), (3, 100, 37), (11, 96, 65), (1, 64, 3)])
def test_matmul_matches_numpy(path, rows, inner, out):
    rng = np.random.default_rng(rows * inner + out)
    x, w = bf16(rng.standard_normal((rows, inner))), bf16(rng.standard_normal((out, inner)))
    got = tf.function(rows_kernel.matmul, jit_compile=True)(
        tf.constant(x, tf.bfloat16), tf.constant(w, tf.bfloat16)
    ).numpy()
    want = x @ w.T
    assert got.shape == (rows, out)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max() * np.sqrt(inner))


def attend_reference(q, k, v, pos, offset, scale):
    """NumPy: row b's query over positions offset[b]..pos, rounded where the bf16 program rounds."""
    rows, heads, _, dim = k.shape
    out = np.zeros((rows, heads, dim))
    for b in range(rows):
        keys, values = k[b, :, offset[b] : pos + 1], v[b, :, offset[b] : pos + 1]
        scores = bf16(np.einsum("hd,hjd->hj", q[b], keys)) * np.float32(scale)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = bf16(probs / probs.sum(axis=-1, keepdims=True))
        out[b] = bf16(np.einsum("hj,hjd->hd", probs, values))
    return out.reshape(rows, heads * dim)


@pytest.mark.parametrize("dim", [64, 8])
def test_attend_matches_numpy_and_reads_only_its_positions(path, dim):
    rng = np.random.default_rng(dim)
    rows, heads, cache_len, pos = 4, 3, 40, 29
    offset = np.array([0, 5, 29, 12], np.int32)
    q = bf16(rng.standard_normal((rows, heads, dim)))
    k, v = (bf16(rng.standard_normal((rows, heads, cache_len, dim))) for _ in "kv")
    want = attend_reference(q, k, v, pos, offset, 1 / np.sqrt(dim))
    for b in range(rows):  # what a row must never read: before its offset, after pos
        for t in (k, v):
            t[b, :, : offset[b]] = np.nan
            t[b, :, pos + 1 :] = 1e30
    run = tf.function(rows_kernel.attend, jit_compile=True)
    bits = lambda t: tf.bitcast(tf.constant(t, tf.bfloat16), tf.uint16)  # noqa: E731 (as cached)
    got = run(tf.constant(q, tf.float32), bits(k), bits(v), tf.constant(pos), tf.constant(offset),
              float(np.float32(1 / np.sqrt(dim)))).numpy()  # fmt: skip
    assert np.isfinite(got).all()
    # bf16 rounding of sums taken in another order may land one bf16 step apart
    np.testing.assert_allclose(got, want, rtol=2**-7, atol=1e-3)
    assert (got == want).mean() > 0.9


def test_bf16_batch_uses_the_kernel_and_gives_the_float32_copies_tokens():
    hp = HParams(n_vocab=300, n_ctx=128, n_embd=64, n_head=2, n_layer=2)
    model = GPT2(hp, seed=5)
    prompts = [[1, 2, 3], [5, 6, 7, 8, 9, 10], [11], [20, 21]]
    out = {}
    for use_kernel in (True, False):
        generator = Generator(model, "bf16", use_kernel=use_kernel)
        assert generator._kernel(True) == use_kernel
        for name, controls in (("greedy", Controls.make(temperature=0.0)),
                               ("sampled", Controls.make(seed=(3, 0), top_k=20))):  # fmt: skip
            out[use_kernel, name] = np.stack([t for t, _ in generator.generate(prompts, 30, controls)])
    for name in ("greedy", "sampled"):
        np.testing.assert_array_equal(out[True, name], out[False, name])


def test_a_second_process_never_runs_the_first_ones_calls(tmp_path):
    """TensorFlow's persistent XLA cache kept the compiled step, calls and all; a second process
    that loaded it crashed. Each process's calls are stamped (`rows_kernel.stamp`), so it compiles
    its own: three processes in a row give the same tokens."""
    script = textwrap.dedent("""
        import numpy as np
        from gpt2easy.generate import Controls, Generator
        from gpt2easy.hparams import HParams
        from gpt2easy.model import GPT2
        hp = HParams(n_vocab=300, n_ctx=64, n_embd=64, n_head=2, n_layer=1)
        generator = Generator(GPT2(hp, seed=1), "bf16")
        assert generator._kernel(True)
        tokens = [t for t, _ in generator.generate([[1, 2, 3]] * 2, 8, Controls.make(seed=(1, 0)))]
        print(np.stack(tokens).tolist())
    """)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, TF_XLA_FLAGS=f"--tf_xla_persistent_cache_directory={tmp_path / 'xla'}",
               PYTHONPATH=src, TF_CPP_MIN_LOG_LEVEL="3")  # fmt: skip
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(3)]  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert len({run.stdout for run in runs}) == 1
    assert any((tmp_path / "xla").iterdir())  # the cache was in use


def test_a_failing_build_raises_and_leaves_no_file(tmp_path):
    fake = tmp_path / "cxx"
    fake.write_text("#!/bin/sh\necho 'fake compiler: no' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="fake compiler: no"):
        rows_kernel.build(str(fake), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
