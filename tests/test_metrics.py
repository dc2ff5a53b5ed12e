"""metrics.jsonl: written by training, one whole line per logged step, continued right on resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from gpt2easy.dataset import save_npz
from gpt2easy.hparams import HParams
from gpt2easy.metrics import FILENAME, MetricsLog, read_metrics, thin

HP = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)


def test_each_line_is_one_write_and_torn_lines_are_skipped(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, 0)
    writes = []
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real(fd, data))
    log.write(1, loss=2.5, lr=1e-3)
    log.write(2, loss=float("nan"))
    log.close()
    assert [w.count(b"\n") for w in writes] == [1, 1] and all(w.endswith(b"\n") for w in writes)
    with open(tmp_path / FILENAME, "a") as f:
        f.write('{"step": 3, "loss": 1.')  # a line cut short by a crash
    rows = read_metrics(tmp_path / FILENAME)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["loss"] == 2.5 and rows[1]["loss"] is None


def test_a_write_error_is_a_warning_not_a_crash(tmp_path, monkeypatch, caplog):
    import errno

    log = MetricsLog(tmp_path, 0)
    log.write(1, loss=1.0)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    log.write(2, loss=2.0)
    log.write(3, loss=3.0)
    log.close()
    assert caplog.text.count("No space left on device") == 1
    assert [r["step"] for r in read_metrics(tmp_path / FILENAME)] == [1]


def test_resume_drops_lines_past_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, 0)
    for step in range(1, 6):
        log.write(step, loss=float(step))
    log.write(5, val_loss=1.0)
    log.close()
    with open(tmp_path / FILENAME, "a") as f:
        f.write("garbage\n{\"step\": 6")
    log = MetricsLog(tmp_path, 3)
    log.write(4, loss=40.0)
    log.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / FILENAME)] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]  # fmt: skip


def test_thin_keeps_validations_and_the_last_row():
    rows = [{"step": i, "loss": 1.0} for i in range(1, 10001)] + [{"step": 10000, "val_loss": 2.0}]
    kept = thin(rows, 100)
    assert len(kept) <= 102 and kept[-1] == {"step": 10000, "val_loss": 2.0}
    assert {"step": 10000, "loss": 1.0} in kept


@pytest.fixture
def corpus(tmp_path, make_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "models" / "tiny", HP)
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "corpus.npz", [rng.integers(0, HP.n_vocab, n) for n in (400, 300)], HP.n_vocab)
    return tmp_path


def config(**kw):
    from gpt2easy.trainer import TrainConfig

    base = dict(dataset="corpus.npz", models_dir="models", model_name="tiny", learning_rate=1e-3,
                sample_every=10**6, save_every=10**6, seed=3, steps=4, val_every=2, val_batch_count=1,
                val_batch_size=1)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_training_writes_metrics_and_resume_continues_them(corpus):
    """A run of 6 steps and a run of 2 + (a crash's stray lines) + 4 steps: the same metrics file."""
    from gpt2easy.trainer import train

    summary = train(config(run_name="once", steps=6))
    once = read_metrics(corpus / "checkpoint/once" / FILENAME)
    steps = [r for r in once if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert steps[-1]["loss"] == pytest.approx(summary["loss"], rel=1e-6)
    assert all(r["lr"] == pytest.approx(1e-3) and r["tokens_per_sec"] > 0 and r["avg"] > 0 for r in steps)
    assert [r["step"] for r in once if "val_loss" in r] == [0, 2, 4]

    train(config(run_name="twice", steps=2))
    path = corpus / "checkpoint/twice" / FILENAME
    with open(path, "a") as f:  # what a kill after unsaved steps 3 and 4 would leave
        f.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + json.dumps({"step": 4, "loss": 9.0}) + "\n{")
    train(config(run_name="twice", steps=4))
    twice = read_metrics(path)
    key = lambda rows: [(r["step"], "val_loss" in r) for r in rows]  # noqa: E731
    assert key(twice) == key(once)
    for a, b in zip(once, twice, strict=True):
        assert a.get("loss", 0) == pytest.approx(b.get("loss", 0), abs=1e-5)
        assert a.get("val_loss", 0) == pytest.approx(b.get("val_loss", 0), abs=1e-5)
