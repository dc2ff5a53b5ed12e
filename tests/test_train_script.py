"""train.py end to end in subprocesses: exact resume, signals, the lock, errors, samples on stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from gpt2easy import runfolder
from gpt2easy.checkpoint import read_tensors
from gpt2easy.dataset import save_npz
from gpt2easy.hparams import HParams
from gpt2easy.model import weight_shapes

pytestmark = pytest.mark.slow

HP = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)


@pytest.fixture
def work(tmp_path, make_model, root):
    """models/tiny (hparams + vocabulary, no checkpoint) and corpus.npz under a fresh folder."""
    make_model(tmp_path / "models" / "tiny", HP)
    rng = np.random.default_rng(0)
    save_npz(tmp_path / "corpus.npz", [rng.integers(0, HP.n_vocab, 500)], HP.n_vocab)
    return tmp_path


def command(root, *flags: str) -> list[str]:
    base = ["--dataset", "corpus.npz", "--models_dir", "models", "--model_name", "tiny",
            "--learning_rate", "0.001", "--seed", "7", "--sample_every", "1000000"]
    pairs = zip(base[::2], base[1::2], strict=True)  # a flag given twice is an error: flags win
    base = [x for flag, value in pairs if flag not in flags for x in (flag, value)]
    return [sys.executable, str(root / "train.py"), *base, *flags]


def run(root, cwd, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(command(root, *flags), cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_resume_through_the_script_is_exact(work, root):
    assert run(root, work, "--run_name", "once", "--steps", "6", "--noise", "0.1").returncode == 0
    for _ in range(2):
        r = run(root, work, "--run_name", "twice", "--steps", "3", "--noise", "0.1")
        assert r.returncode == 0, r.stderr
    assert "trained 3 steps (now at step 6)" in r.stderr
    once = read_tensors(str(work / "checkpoint/once/model-6"))
    twice = read_tensors(str(work / "checkpoint/twice/model-6"))
    for name in weight_shapes(HP):
        np.testing.assert_allclose(once[name], twice[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_save_and_exit_zero(work, root, sig):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(command(root, "--steps", "-1"), cwd=work, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:
            if line.startswith("[3 |"):
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    n = int((work / "checkpoint/run1/counter").read_text())
    assert n >= 3 and (work / f"checkpoint/run1/model-{n}.index").is_file()
    assert "stopping after this step and saving" in err and f"model-{n}" in err.splitlines()[-1]


def test_second_trainer_is_refused(work, root):
    lock = runfolder.RunLock(work / "checkpoint" / "run1")
    try:
        r = run(root, work, "--steps", "1")
    finally:
        lock.release()
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("train.py: error: ")
    assert "in use by another training" in r.stderr


@pytest.mark.parametrize("flags, message", [
    (("--batch_size", "0"), "--batch_size must be at least 1"),
    (("--optimizer", "adagrad"), "--optimizer must be one of"),
    (("--sample_length", "100"), "--sample_length 100 is too long"),
    (("--restore_from", "nowhere/model-5"), "not a checkpoint"),
])
def test_bad_flags_exit_2_with_one_line(work, root, flags, message):
    r = run(root, work, *flags)
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr


def test_text_dataset_from_scratch_with_samples_on_stdout(work, root, shakespeare_dir):
    hp = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=1)
    hp.to_json(work / "models" / "tiny" / "hparams.json")
    r = run(root, work, "--dataset", str(shakespeare_dir / "sonnets.txt"), "--steps", "4",
            "--sample_every", "2", "--sample_length", "8", "--print_every", "2")
    assert r.returncode == 0, r.stderr
    assert "training from scratch (random init)" in r.stderr
    assert "[2 |" in r.stderr and "[4 |" in r.stderr and "[1 |" not in r.stderr
    assert r.stdout.count("======== SAMPLE 1 ========") == 2  # steps 2 and 4
    assert (work / "samples/run1/samples-4").read_text() in r.stdout
