"""The real trainer under `--strategy mirrored` (two logical CPU devices) and `multi_worker` (two
processes on 127.0.0.1) trains like one process with the same global batch and seed: same final
loss, validation loss and checkpoint (noise, accumulation and validation on); only the chief writes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_distribute import config as tf_config
from test_distribute import free_ports, wait_all

from gpt2easy.checkpoint import read_tensors
from gpt2easy.dataset import save_npz
from gpt2easy.hparams import HParams
from gpt2easy.model import weight_shapes

HP = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)


def launch(tmp, name, cfg, logical_cpus=1, tf_config_text=None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if tf_config_text:
        env["TF_CONFIG"] = tf_config_text
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed by wait_all
    job = os.path.join(os.path.dirname(__file__), "dist_train_job.py")
    proc = subprocess.Popen(
        [sys.executable, job, "--logical_cpus", str(logical_cpus), "--config", json.dumps(cfg),
         "--out", str(tmp / f"{name}.json")], cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.name, proc.log = name, log
    return proc


@pytest.mark.slow
def test_trainer_mirrored_and_multi_worker_equal_one_process(tmp_path, make_model):
    make_model(tmp_path / "models" / "tiny", HP)
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "corpus.npz", [rng.integers(0, HP.n_vocab, n) for n in (400, 300)],
             HP.n_vocab)
    base = dict(dataset="corpus.npz", models_dir="models", model_name="tiny", learning_rate=1e-3,
                sample_every=10**6, save_every=10**6, seed=3, steps=4, noise=0.1,
                accumulate_gradients=2, val_every=2, val_batch_count=3,
                precision="fp32")  # the exact reference: compared by value across runs/strategies
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = [
        launch(tmp_path, "single", {**base, "batch_size": 4, "run_name": "single"}),
        launch(tmp_path, "mirrored", {**base, "batch_size": 2, "run_name": "mirrored",
                                      "strategy": "mirrored"}, logical_cpus=2),
        *[launch(tmp_path, f"worker{i}", {**base, "batch_size": 2, "run_name": "multi",
                                          "strategy": "multi_worker"},
                 tf_config_text=tf_config({"worker": hosts}, "worker", i)) for i in range(2)],
    ]
    wait_all(procs, tmp_path)
    runs = {p.name: json.loads((tmp_path / f"{p.name}.json").read_text()) for p in procs}
    assert all("error" not in r and r["step"] == 4 for r in runs.values()), runs
    for name in ("mirrored", "worker0", "worker1"):
        assert runs[name]["loss"] == pytest.approx(runs["single"]["loss"], abs=1e-4)
    logs = {p.name: (tmp_path / f"{p.name}.log").read_text() for p in procs}
    assert "global batch 2 x 2 = 4" in logs["mirrored"] and "global batch 2 x 2" in logs["worker1"]
    ck = tmp_path / "checkpoint"
    single = read_tensors(str(ck / "single" / "model-4"))
    for run in ("mirrored", "multi"):
        other = read_tensors(str(ck / run / "model-4"))
        assert int(other["train/step"]) == 4
        for name in weight_shapes(HP):
            np.testing.assert_allclose(other[name], single[name], atol=1e-4, rtol=0, err_msg=name)
            np.testing.assert_allclose(other[f"optimizer/{name}/m"], single[f"optimizer/{name}/m"],
                                       atol=1e-4, rtol=0)
    assert "saved checkpoint/multi/model-4" in logs["worker0"]
    assert "saved checkpoint" not in logs["worker1"]  # the non-chief wrote nothing


@pytest.mark.slow
def test_trainer_sigterm_on_the_other_worker_stops_both_with_the_chiefs_save(tmp_path, make_model):
    import re
    import signal
    import time

    make_model(tmp_path / "models" / "tiny", HP)
    save_npz(tmp_path / "corpus.npz", [np.random.default_rng(5).integers(0, HP.n_vocab, 500)],
             HP.n_vocab)
    cfg = dict(dataset="corpus.npz", models_dir="models", model_name="tiny", seed=3, steps=None,
               sample_every=10**6, save_every=10**6, batch_size=1, strategy="multi_worker")
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = [launch(tmp_path, f"w{i}", cfg, tf_config_text=tf_config({"worker": hosts}, "worker", i))
             for i in range(2)]
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if re.search(r"\[3 \| ", (tmp_path / "w1.log").read_text(errors="replace")):
            break
        time.sleep(0.2)
    else:
        for p in procs:
            p.kill()
        wait_all(procs, tmp_path, timeout=10)
        pytest.fail("the workers did not reach step 3")
    procs[1].send_signal(signal.SIGTERM)
    wait_all(procs, tmp_path, timeout=60)
    chief, other = (json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2))
    assert "error" not in chief and chief["step"] == other["step"] >= 3
    prefix = tmp_path / "checkpoint" / "run1" / f"model-{chief['step']}"
    assert int(read_tensors(str(prefix), ["train/step"])["train/step"]) == chief["step"]


@pytest.mark.slow
def test_without_seed_every_worker_uses_the_chiefs_random_seed(tmp_path, make_model):
    """No --seed: the chief draws one and every worker trains with it (different seeds would mean
    different data orders: the workers would refuse to start, or silently train on other windows)."""
    import re

    make_model(tmp_path / "models" / "tiny", HP)
    save_npz(tmp_path / "corpus.npz", [np.random.default_rng(5).integers(0, HP.n_vocab, 500)],
             HP.n_vocab)
    cfg = dict(dataset="corpus.npz", models_dir="models", model_name="tiny", steps=2,
               sample_every=10**6, save_every=10**6, batch_size=1, strategy="multi_worker")
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = [launch(tmp_path, f"w{i}", cfg, tf_config_text=tf_config({"worker": hosts}, "worker", i))
             for i in range(2)]
    wait_all(procs, tmp_path)
    runs = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    assert all("error" not in r and r["step"] == 2 for r in runs), runs
    logged = [re.findall(r"seed (\d+),", (tmp_path / f"w{i}.log").read_text()) for i in range(2)]
    assert logged[0] and logged[0] == logged[1] == [str(runs[0]["seed"])], logged
    assert runs[0]["seed"] == runs[1]["seed"]
    saved = read_tensors(str(tmp_path / "checkpoint" / "run1" / "model-2"), ["train/seed"])
    assert int(saved["train/seed"]) == runs[0]["seed"]
