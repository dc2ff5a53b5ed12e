"""Fast-path choices (`--precision auto`, `--xla auto`) and the XLA compilation cache's folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from gpt2easy import compile_cache, machine


def test_auto_precision_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert machine.resolve_precision("auto", gpu=False) == "fp32"
    assert machine.resolve_precision("auto", gpu=True) == "bf16"
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert machine.resolve_precision("auto", gpu=False) == "bf16"
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert machine.resolve_precision("auto", gpu=False) == "bf16"
    for explicit in ("fp32", "bf16"):  # an explicit choice is never changed
        assert machine.resolve_precision(explicit, gpu=True) == explicit


def test_auto_xla_small_fp32_on_a_cpu_always_on_a_gpu():
    assert machine.resolve_xla("auto", "fp32", 16_000_000, gpu=False) is True
    assert machine.resolve_xla("auto", "fp32", 124_000_000, gpu=False) is False
    assert machine.resolve_xla("auto", "bf16", 16_000_000, gpu=False) is False
    for precision in ("fp32", "bf16"):  # measured on an H200: XLA 1.7-3.7x the plain graph
        assert machine.resolve_xla("auto", precision, 124_000_000, gpu=True) is True
        assert machine.resolve_xla("auto", precision, 1_500_000_000, gpu=True) is True
    assert machine.resolve_xla(True, "bf16", 124_000_000, gpu=False) is True
    assert machine.resolve_xla(False, "fp32", 1, gpu=True) is False


def test_cpu_flags_read_from_proc():
    if not os.path.exists("/proc/cpuinfo"):
        return
    flags = machine.cpu_flags()
    assert "sse2" in flags or "fp" in flags or "neon" in flags  # any x86-64 or Arm CPU has one


def test_cache_folder_depends_on_cpu_and_tensorflow(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2EASY_CACHE", str(tmp_path))
    a = compile_cache.cache_dir()
    assert a.parent == tmp_path / "xla" and compile_cache.tensorflow_version() in a.name
    monkeypatch.setattr(compile_cache, "cpu_flags", lambda: frozenset({"avx2"}))
    assert compile_cache.cache_dir() != a  # another instruction set never loads these programs
    monkeypatch.setattr(compile_cache, "tensorflow_version", lambda: "0.0.1")
    assert "tf-0.0.1-" in compile_cache.cache_dir().name


def test_enable_sets_flag_once_and_can_be_off(tmp_path):
    code = ("import os, sys; sys.path.insert(0, 'src'); from gpt2easy import compile_cache; "
            "print(compile_cache.enable()); print(os.environ.get('TF_XLA_FLAGS', ''))")
    env = {**os.environ, "GPT2EASY_CACHE": str(tmp_path), "TF_XLA_FLAGS": "--tf_xla_auto_jit=0"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                         check=True).stdout.splitlines()  # fmt: skip
    assert out[0].startswith(str(tmp_path / "xla"))
    assert out[1] == f"--tf_xla_auto_jit=0 {compile_cache.FLAG}={out[0]}"
    off = subprocess.run([sys.executable, "-c", code], env={**env, "GPT2EASY_XLA_CACHE": "0"}, cwd=root,
                         capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert off == ["None", "--tf_xla_auto_jit=0"]


def test_auto_precision_reaches_the_generator_and_the_trainer(monkeypatch, tmp_path):
    """`--precision auto` is resolved where the work starts: the generator's matrices and the
    training step take the dtype the machine's bf16 support picks."""
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from gpt2easy import trainer
    from gpt2easy.generate import Generator
    from gpt2easy.hparams import HParams
    from gpt2easy.model import GPT2

    gpt = GPT2(HParams(n_vocab=80, n_ctx=16, n_embd=16, n_head=2, n_layer=1), seed=1)
    monkeypatch.setattr(machine, "has_gpu", lambda: False)
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2"}))
    assert Generator(gpt, "auto").dtype == tf.float32
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert Generator(gpt, "auto").dtype == tf.bfloat16

    seen = {}

    def check(cfg):  # the first thing train() does with the config: record it and stop
        seen["p"] = cfg.precision
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer.TrainConfig, "check", check)
    cfg = trainer.TrainConfig(dataset=str(tmp_path / "x.npz"), precision="auto")
    np.savez(tmp_path / "x.npz", np.arange(10, dtype=np.uint16))
    try:
        trainer.train(dataclasses.replace(cfg))
    except RuntimeError:
        pass
    assert seen["p"] == "bf16"


def test_cache_stays_under_its_limit_least_recently_used_first(tmp_path):
    folder = tmp_path / "xla" / "tf-9.9-abc"
    folder.mkdir(parents=True)
    now = time.time()
    for i in range(10):  # 10 programs of 100 bytes, program 0 used longest ago
        path = folder / f"xla_compile_cache__{i}.pb"
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - 1000 + i, now - 1000 + i))
    assert compile_cache.prune(folder, limit=1000) == 0  # at the limit: nothing goes
    assert compile_cache.prune(folder, limit=800) == 4  # down to 3/4 of 800: 6 programs left
    assert sorted(p.name for p in folder.iterdir()) == [f"xla_compile_cache__{i}.pb" for i in range(4, 10)]
    stale, fresh = tmp_path / "xla" / "tf-1.0-old", tmp_path / "xla" / "tf-1.0-other-cpu"
    for sibling, age in ((stale, 31), (fresh, 29)):
        sibling.mkdir()
        (sibling / "p.pb").write_bytes(b"y")
        os.utime(sibling / "p.pb", (now - age * 86400, now - age * 86400))
    assert compile_cache.prune(folder, limit=10**6) == 1
    assert not stale.exists() and fresh.exists() and len(list(folder.iterdir())) == 6


def test_cache_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPT2EASY_XLA_CACHE_GB", "0.5")
    assert compile_cache.limit_bytes() == 512 * 1024**2
    monkeypatch.setenv("GPT2EASY_XLA_CACHE_GB", "lots")
    assert compile_cache.limit_bytes() == 2 * 1024**3
