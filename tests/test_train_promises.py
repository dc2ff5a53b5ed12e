"""README promises about a training run, checked by value against independent computations:
fine-tuning starts from the base model's weights; the TensorBoard scalars; the classic `avg`.

In-process on a tiny model. The loss of the first update is recomputed with the NumPy forward pass
of test_model.py on the very batch the step received; the moving average is recomputed from the
losses the event file holds.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from test_model import random_weights, reference_logits

from gpt2easy import step as train_module
from gpt2easy.checkpoint import load_weights
from gpt2easy.dataset import save_npz
from gpt2easy.hparams import HParams
from gpt2easy.optim import Schedule
from gpt2easy.trainer import TrainConfig, train

HP = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)
STEP_LINE = re.compile(r"\[(\d+) \| [\d.]+\] loss=([\d.]+) avg=([\d.]+)")


@pytest.fixture
def base(tmp_path, make_model, monkeypatch):
    """models/tiny WITH a checkpoint of non-trivial random weights (a base model), and a corpus."""
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "models" / "tiny", HP, random_weights(HP, seed=4))
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "corpus.npz", [rng.integers(0, HP.n_vocab, n) for n in (400, 300)], HP.n_vocab)
    return tmp_path


def config(**kw) -> TrainConfig:
    # fp32: the exact reference these promises are checked against (the default, auto, is bf16
    # on CPUs with native bf16)
    base = dict(dataset="corpus.npz", models_dir="models", model_name="tiny", learning_rate=1e-3,
                sample_every=10**6, save_every=10**6, seed=3, steps=3, batch_size=2, precision="fp32")
    return TrainConfig(**{**base, **kw})


def record_updates(monkeypatch) -> list[dict]:
    """Wrap TrainStep.update: each call's batch, the weights it started from, and its loss."""
    calls = []
    original = train_module.TrainStep.update

    def update(self, tokens, lr, step, stop=False):
        before = {name: var.numpy().copy() for name, var in self.gpt.weights.items()}
        out = original(self, tokens, lr, step, stop)
        calls.append({"tokens": np.array(tokens), "before": before, "loss": float(out[0])})
        return out

    monkeypatch.setattr(train_module.TrainStep, "update", update)
    return calls


def numpy_loss(weights: dict, rows: np.ndarray) -> float:
    """Mean next-token cross-entropy of rows [n, window + 1] by the NumPy forward pass (float64)."""
    losses = []
    for row in rows:
        logits = reference_logits(weights, row[:-1].tolist(), HP)
        logits = logits - logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        losses.extend(-logp[np.arange(len(row) - 1), row[1:]])
    return float(np.mean(losses))


def test_fine_tuning_starts_from_the_base_weights(base, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    calls = record_updates(monkeypatch)
    train(config(steps=2))
    _, base_weights = load_weights(base / "models" / "tiny", HP)
    first = calls[0]
    assert first["before"].keys() == base_weights.keys()
    for name, value in base_weights.items():
        np.testing.assert_array_equal(first["before"][name], value, err_msg=name)
    rows = first["tokens"].reshape(-1, first["tokens"].shape[-1])
    assert first["loss"] == pytest.approx(numpy_loss(base_weights, rows), rel=1e-5)
    assert not np.array_equal(calls[1]["before"]["model/wte"], base_weights["model/wte"])  # it trained
    assert "training from scratch" not in caplog.text


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the run folder's TensorBoard event files: tag -> {step: value}."""
    out: dict[str, dict[int, float]] = {}
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {run_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                value = float(tf.make_ndarray(v.tensor)) if v.HasField("tensor") else v.simple_value
                out.setdefault(v.tag, {})[event.step] = value
    return out


def test_tensorboard_scalars_and_the_classic_moving_average(base, monkeypatch, caplog):
    """5 updates (3, then 2 more after a resume): the event file holds loss (the step's own loss),
    learning_rate (the schedule's), tokens_per_sec and val_loss; the log's avg is the classic
    bias-corrected moving average (decay 0.99) of the losses, carried across the resume."""
    caplog.set_level(logging.INFO)
    calls = record_updates(monkeypatch)
    kw = dict(warmup_steps=4, learning_rate=2e-3, val_every=2, val_batch_count=2)
    train(config(steps=3, **kw))
    train(config(steps=2, **kw))
    got = scalars(base / "checkpoint" / "run1")
    assert {"loss", "learning_rate", "tokens_per_sec", "val_loss"} <= set(got)
    losses = [c["loss"] for c in calls]
    assert sorted(got["loss"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([got["loss"][n] for n in range(1, 6)], losses, rtol=1e-6)
    schedule = Schedule(2e-3, warmup_steps=4)
    np.testing.assert_allclose([got["learning_rate"][n] for n in range(1, 6)],
                               [schedule(n) for n in range(5)], rtol=1e-6)
    assert all(v > 0 for v in got["tokens_per_sec"].values()) and len(got["tokens_per_sec"]) == 5
    assert set(got["val_loss"]) >= {0, 2, 4} and all(3 < v < 8 for v in got["val_loss"].values())
    logged = {int(m.group(1)): (float(m.group(2)), float(m.group(3)))
              for m in map(STEP_LINE.search, caplog.text.splitlines()) if m}
    ema = 0.0
    for n, loss in enumerate(losses, start=1):
        ema = 0.99 * ema + 0.01 * loss  # started at 0, hence the correction by 1 - 0.99**n
        assert logged[n][0] == pytest.approx(loss, abs=6e-5)
        assert logged[n][1] == pytest.approx(ema / (1 - 0.99**n), abs=6e-5), n
    assert logged[5][1] != pytest.approx(np.mean(losses[3:]), abs=1e-3)  # not restarted on resume
