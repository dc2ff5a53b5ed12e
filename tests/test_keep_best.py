"""--keep_best and --early_stopping: the best checkpoint survives --max_checkpoints, is named in
best.json and is the validation minimum; training stops after N validations without improvement;
both decide exactly the same when the run is stopped and resumed anywhere."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from gpt2easy import checkpoint as ck
from gpt2easy import locate
from gpt2easy.best import Best
from gpt2easy.checkpoint import read_tensors
from gpt2easy.dataset import save_npz
from gpt2easy.errors import UserError
from gpt2easy.hparams import HParams
from gpt2easy.trainer import TrainConfig, train

HP = HParams(n_vocab=300, n_ctx=16, n_embd=16, n_head=2, n_layer=1)


def test_best_counts_each_multiple_once_and_runs_out_of_patience():
    best = Best()
    assert best.counts(0, 2) and not best.counts(1, 2) and not best.counts(4, 0)
    assert best.update(5.0, 0) and (best.step, best.bad) == (0, 0)
    assert not best.counts(0, 2)  # counted already
    assert not best.update(5.0, 2) and best.bad == 1  # equal is no improvement
    assert best.update(4.0, 4) and (best.step, best.bad, best.last) == (4, 0, 4)
    assert not best.update(4.5, 6) and not best.exhausted(2) and not best.exhausted(0)
    assert not best.update(4.5, 8) and best.exhausted(2)
    assert Best.from_state(best.state()) == best
    assert Best.from_state({}) == Best()


def test_max_checkpoints_spares_the_protected_one(tmp_path):
    tensors = {"x": np.zeros(2, np.float32)}
    for step in range(1, 6):
        ck.write_checkpoint(tmp_path, step, tensors, max_to_keep=2, protect=("model-2",))
    names = sorted(p.name[:-6] for p in tmp_path.glob("*.index"))
    assert names == ["model-2", "model-4", "model-5"]
    assert locate.candidates(tmp_path)[0].endswith("model-5")  # still the newest in the state file
    ck.write_checkpoint(tmp_path, 6, tensors, max_to_keep=2)  # no longer protected: goes
    assert sorted(p.name[:-6] for p in tmp_path.glob("*.index")) == ["model-5", "model-6"]


@pytest.fixture
def tiny(tmp_path, make_model, monkeypatch):
    """Training ids from 0..99, validation ids from 0..199: the validation loss first falls (mass
    moves onto the first 100 ids) then rises (too much of it): a minimum in the middle."""
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "models" / "tiny", HP)
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "train.npz", [rng.integers(0, 100, 600)], HP.n_vocab)
    save_npz(tmp_path / "val.npz", [rng.integers(0, 200, 400)], HP.n_vocab)
    return tmp_path


def config(**kw) -> TrainConfig:
    base = dict(dataset="train.npz", val_dataset="val.npz", models_dir="models", model_name="tiny",
                learning_rate=3e-3, sample_every=10**6, save_every=10**6, seed=3, steps=30,
                batch_size=2, val_every=2, val_batch_count=4, max_checkpoints=1, keep_best=True,
                precision="fp32",  # the exact reference: compared by value across runs/strategies
                # What is tested here is the bookkeeping, not the compiler: without XLA, because
                # each of these ~20 in-process runs would compile a new XLA step whose code the
                # process never unmaps (250-340 memory maps each; README Troubleshooting).
                xla=False)
    return TrainConfig(**{**base, **kw})


def validations(text: str) -> dict[int, float]:
    return {int(m[1]): float(m[2]) for m in re.finditer(r"\[(\d+) \| [\d.]+\] validation loss = ([\d.]+)",
                                                        text)}


def test_keep_best_keeps_the_minimum_and_early_stopping_stops(tiny, caplog):
    caplog.set_level(logging.INFO)
    s = train(config(early_stopping=3))
    losses = validations(caplog.text)
    best_step = min(losses, key=losses.get)
    assert 0 < best_step < s["step"], losses  # the fixture's curve: a minimum in the middle
    assert s["stopped_early"] and s["step"] == best_step + 3 * 2 and s["step"] < 30
    assert s["best_step"] == best_step and s["best_val_loss"] == pytest.approx(losses[best_step], abs=1e-4)
    run = tiny / "checkpoint" / "run1"
    assert json.loads((run / "best.json").read_text())["checkpoint"] == f"model-{best_step}"
    kept = sorted(int(p.name[6:-6]) for p in run.glob("model-*.index") if p.name[6:-6].isdigit())
    assert kept == [best_step, s["step"]]  # --max_checkpoints 1 plus the best
    # `best` as a checkpoint reference: the sampling/evaluate side and --restore_from.
    hp, _, prefix = locate.open_model("models", "tiny", "run1", "best")
    assert Path(prefix).resolve() == run / f"model-{best_step}"
    from gpt2easy.evaluate import EvaluateConfig, run_evaluate

    scored = run_evaluate(EvaluateConfig(data="val.npz", models_dir="models", model_name="tiny",
                                         run_name="run1", checkpoint="best"), progress=False)
    assert scored.checkpoint.endswith(f"model-{best_step}") and scored.tokens == 400
    again = train(config(restore_from="best", steps=1, early_stopping=0, run_name="run1"))
    assert again["step"] == best_step + 1


def test_best_is_the_starting_weights_when_training_only_hurts(tiny, caplog):
    caplog.set_level(logging.INFO)
    save_npz(tiny / "val.npz", [np.random.default_rng(1).integers(150, 300, 400)], HP.n_vocab)
    s = train(config(early_stopping=2, learning_rate=3e-2))
    assert s["stopped_early"] and s["best_step"] == 0 and s["step"] == 4
    assert (tiny / "checkpoint" / "run1" / "model-0.index").is_file()


@pytest.mark.parametrize("first", [1, 2, 5, 8])
def test_stop_and_resume_decides_exactly_like_one_run(tiny, first):
    """Stopped after `first` updates (checkpoints saved before / after a validation) and resumed."""
    once = train(config(run_name="once", early_stopping=3))
    train(config(run_name="split", early_stopping=3, steps=first))
    split = train(config(run_name="split", early_stopping=3, steps=30 - first))
    for key in ("step", "best_step", "stopped_early"):
        assert split[key] == once[key], key
    assert split["best_val_loss"] == pytest.approx(once["best_val_loss"], abs=1e-6)
    best = [json.loads((tiny / "checkpoint" / r / "best.json").read_text()) for r in ("once", "split")]
    assert best[0]["checkpoint"] == best[1]["checkpoint"]
    a, b = (read_tensors(str(tiny / "checkpoint" / r / f"model-{once['step']}")) for r in ("once", "split"))
    for name in ("train/best_step", "train/bad_validations", "train/last_validation"):
        assert int(a[name]) == int(b[name]), name
    np.testing.assert_allclose(a["model/wte"], b["model/wte"], atol=1e-6, rtol=0)


def test_a_stopped_run_stays_stopped(tiny, caplog):
    caplog.set_level(logging.INFO)
    s = train(config(early_stopping=2))
    again = train(config(early_stopping=2))
    assert again["steps"] == 0 and again["step"] == s["step"] and again["stopped_early"]


@pytest.mark.parametrize("kw", [dict(keep_best=True, val_every=0), dict(early_stopping=2, val_every=0,
                                                                        keep_best=False)])
def test_needs_validation(tiny, kw):
    with pytest.raises(UserError, match="needs validation: add --val_every N"):
        train(config(**kw))


def test_best_needs_a_best_checkpoint(tiny):
    with pytest.raises(UserError, match="has no best checkpoint"):
        locate.best_checkpoint(tiny)
    train(config(keep_best=False, steps=2))
    with pytest.raises(UserError, match="has no best checkpoint"):
        train(config(restore_from="best"))


@pytest.mark.slow
def test_mirrored_and_multi_worker_decide_like_one_process(tiny):
    """Two replicas (mirrored, two logical CPUs) and two workers (multi_worker on 127.0.0.1) with
    half the batch each: the same validations, best checkpoint and early stop as one process."""
    from test_distribute import config as tf_config
    from test_distribute import free_ports, wait_all
    from test_distribute_trainer import launch

    base = dataclasses.asdict(config(early_stopping=3))
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = [
        launch(tiny, "single", {**base, "batch_size": 4, "run_name": "single"}),
        launch(tiny, "mirrored", {**base, "batch_size": 2, "run_name": "mirrored",
                                  "strategy": "mirrored"}, logical_cpus=2),
        *[launch(tiny, f"worker{i}", {**base, "batch_size": 2, "run_name": "multi",
                                      "strategy": "multi_worker"},
                 tf_config_text=tf_config({"worker": hosts}, "worker", i)) for i in range(2)],
    ]
    wait_all(procs, tiny)
    runs = {p.name: json.loads((tiny / f"{p.name}.json").read_text()) for p in procs}
    assert runs["single"]["stopped_early"] and 0 < runs["single"]["best_step"], runs
    for name in ("mirrored", "worker0", "worker1"):
        for key in ("step", "best_step", "stopped_early"):
            assert runs[name][key] == runs["single"][key], (name, key, runs)
        assert runs[name]["best_val_loss"] == pytest.approx(runs["single"]["best_val_loss"], abs=1e-4)
    for run in ("single", "mirrored", "multi"):
        best = json.loads((tiny / "checkpoint" / run / "best.json").read_text())
        assert best["checkpoint"] == f"model-{runs['single']['best_step']}"
        assert (tiny / "checkpoint" / run / f"{best['checkpoint']}.index").is_file()


def test_encoding_and_validation_show_progress_bars(tmp_path, make_model, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    hp = HParams(n_vocab=50257, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    make_model(tmp_path / "models" / "big", hp)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("To be, or not to be, that is the question.\n" * 20)
    train(TrainConfig(dataset="texts", models_dir="models", model_name="big", steps=1, val_every=1,
                      val_batch_count=2, sample_every=10**6, seed=1))
    err = capsys.readouterr().err
    assert re.search(r"encoding: +\d+%\|", err) and re.search(r"validation: +\d+%\|", err), err
