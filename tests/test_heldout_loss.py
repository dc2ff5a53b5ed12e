"""demo/heldout_loss.py: the mean loss over every token of a file, against a direct computation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy.dataset import save_npz
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights, model

HP = HParams(n_vocab=300, n_ctx=16, n_embd=32, n_head=2, n_layer=2)
DOCS = (45, 16, 17, 2, 1, 33)  # lengths: whole windows, a window plus one, too short to score


def load_script(root):
    spec = importlib.util.spec_from_file_location("heldout_loss", root / "demo" / "heldout_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def work(tmp_path, make_model):
    weights = initial_weights(HP, seed=3)
    make_model(tmp_path / "models" / "tiny", HP, weights)
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, HP.n_vocab, n) for n in DOCS]
    save_npz(tmp_path / "val.npz", docs, HP.n_vocab)
    return tmp_path, weights, docs


def test_windows_predict_every_token_but_each_documents_first_once(root):
    script = load_script(root)
    docs = [np.arange(n) + 1000 * i for i, n in enumerate(DOCS)]
    targets = []
    for length, rows in script.windows(docs, 16).items():
        for row in rows:
            assert len(row) == length + 1 and 1 <= length <= 16
            targets += list(row[1:])
    expected = [t for d in docs for t in d[1:]]
    assert sorted(targets) == sorted(expected)


def test_loss_equals_a_direct_computation(work, root):
    tmp_path, weights, docs = work
    params = {k: tf.constant(v) for k, v in weights.items()}
    total, count = 0.0, 0
    for doc in docs:  # by hand: each 16-token window from its start, nothing batched or padded
        for start in range(0, len(doc) - 1, 16):
            row = doc[start:start + 17]
            logits, _ = model(params, tf.constant(row[None, :-1], tf.int32), HP)
            logp = tf.nn.log_softmax(logits[0]).numpy().astype(np.float64)
            total -= logp[np.arange(len(row) - 1), row[1:]].sum()
            count += len(row) - 1
    out = subprocess.run(
        [sys.executable, str(root / "demo" / "heldout_loss.py"), "--dataset=val.npz",
         "--models_dir=models", "--model_name=tiny", "--batch_size=3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:2] == ["held-out", "loss:"] and words[5] == f"{count:,}"
    assert float(words[2]) == pytest.approx(total / count, abs=2e-4)


def test_a_window_longer_than_the_context_is_refused(work, root):
    tmp_path, _, _ = work
    out = subprocess.run(
        [sys.executable, str(root / "demo" / "heldout_loss.py"), "--dataset=val.npz",
         "--models_dir=models", "--model_name=tiny", "--window=17"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "--window must be between 1 and" in out.stderr
    assert "Traceback" not in out.stderr
