"""Data-parallel training (`gpt2easy.distribute`): TF_CONFIG checks, chief choice, the step's math,
and end to end on CPU: `mirrored` over two logical CPU devices and `multi_worker` over two processes
on 127.0.0.1 train exactly like one process with the same global batch and seed.

The end-to-end runs use tests/dist_job.py in subprocesses (devices and collectives must be set up
before TensorFlow starts); every wait is bounded and every process is killed on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpt2easy import distribute
from gpt2easy.errors import UserError

JOB = Path(__file__).with_name("dist_job.py")
TIMEOUT = 150  # seconds for a whole group of processes; a hung worker fails the test


# --- TF_CONFIG and the chief -----------------------------------------------------------------


def config(cluster: dict, kind: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


TWO_WORKERS = {"worker": ["127.0.0.1:1001", "127.0.0.1:1002"]}


@pytest.mark.parametrize("text, fragment", [
    (None, "needs the TF_CONFIG"),
    ("", "needs the TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', "needs a \"cluster\" and a \"task\""),
    (config({"ps": ["a:1"]}, "ps", 0), "job 'ps' is not supported"),
    (config({"worker": []}, "worker", 0), "non-empty list"),
    (config({"worker": ["a"]}, "worker", 0), "host:port"),
    (config(TWO_WORKERS, "worker", 2), "does not name a member"),
    (config(TWO_WORKERS, "chief", 0), "does not name a member"),
])
def test_bad_tf_config_is_one_line_user_error(text, fragment):
    with pytest.raises(UserError, match=fragment) as e:
        distribute.parse_tf_config(text)
    assert "\n" not in str(e.value)


def test_chief_is_the_chief_task_else_worker_zero():
    assert distribute.is_chief_task(json.loads(config(TWO_WORKERS, "worker", 0)))
    assert not distribute.is_chief_task(json.loads(config(TWO_WORKERS, "worker", 1)))
    with_chief = {"chief": ["h:1"], **TWO_WORKERS}
    assert distribute.is_chief_task(json.loads(config(with_chief, "chief", 0)))
    assert not distribute.is_chief_task(json.loads(config(with_chief, "worker", 0)))


def test_strategy_names_are_checked(monkeypatch):
    with pytest.raises(UserError, match="--strategy must be one of"):
        distribute.make_strategy("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multi_worker")


# --- the step under the default strategy (in process) ----------------------------------------


def test_default_strategy_step_is_plain_sgd_with_averaged_micro_batches():
    import tensorflow as tf

    strategy = distribute.make_strategy("default")
    assert distribute.num_replicas(strategy) == 1 and distribute.is_chief(strategy)
    assert "global batch 1 x 3 = 3" in distribute.describe(strategy, 3)
    w = tf.Variable([1.0, -2.0])

    def grads_fn(tokens, step):  # loss = mean over micro-batches of mean(x) * w . [1, 1]
        x = tf.cast(tokens, tf.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(x) * tf.reduce_sum(w * w)
        return loss, [tape.gradient(loss, w)]

    step = distribute.TrainStep(strategy, {"w": w}, grads_fn,
                                lambda g, lr, s: w.assign_sub(lr * g["w"]),
                                batch_size=2, accumulate=2, window=1,
                                clip=lambda g: (g, tf.linalg.global_norm(list(g.values()))))
    tokens = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], np.int32)
    loss, norm, stop = step(tokens, 0.1, 0, stop=True)
    mean_x = tokens.mean()
    expected_grad = 2 * mean_x * np.array([1.0, -2.0])
    assert loss == pytest.approx(mean_x * 5.0)
    assert norm == pytest.approx(np.linalg.norm(expected_grad))
    assert stop is True
    np.testing.assert_allclose(w.numpy(), [1.0, -2.0] - 0.1 * expected_grad, rtol=1e-6)
    step(tokens, 0.1, 1)
    assert step.tracing_count() == 1


def test_eval_is_the_mean_over_exactly_the_rows_given():
    import tensorflow as tf

    strategy = distribute.make_strategy("default")
    rows = np.arange(20, dtype=np.int32).reshape(5, 4)  # 5 rows in batches of 2: one is padded
    ev = distribute.EvalLoss(strategy, lambda r: tf.reduce_mean(tf.cast(r, tf.float32), axis=1),
                             batch_size=2, window=3)
    assert ev(rows) == pytest.approx(rows.mean())
    assert ev(rows[:2]) == pytest.approx(rows[:2].mean())


def test_broadcast_and_agreement_under_default_strategy():
    strategy = distribute.make_strategy("default")
    values = {"w": np.ones(3, np.float32), "train/step": np.int64(7)}
    assert distribute.broadcast_from_chief(strategy, values) == values
    distribute.check_same_start(strategy, step=3)  # one worker: nothing to compare
    assert distribute.any_worker(strategy, True) and not distribute.any_worker(strategy, False)


def test_peer_failure_message_is_one_telling_line():
    import tensorflow as tf

    error = tf.errors.UnavailableError(None, None, "Graph execution error:\n\nDetected at node x\n"
                                       "failed to connect to all addresses; Connection refused")
    message = distribute.peer_failure_message(error)
    assert "\n" not in message and "failed to connect" in message


# --- end to end, in subprocesses -------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def launch(tmp: Path, name: str, *args: str, tf_config: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    if tf_config:
        env["TF_CONFIG"] = tf_config
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, str(JOB), "--out", str(tmp / f"{name}.npz"), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.name, proc.log = name, log
    return proc


def wait_all(procs: list[subprocess.Popen], tmp: Path, timeout: float = TIMEOUT) -> None:
    """Wait for every process within one deadline; on a timeout or a failure kill them all and
    fail with the tail of each log."""
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            p.log.close()
    bad = [p for p in procs if p.returncode != 0]
    if bad:
        tails = {p.name: (tmp / f"{p.name}.log").read_text(errors="replace")[-1500:] for p in bad}
        pytest.fail(f"processes failed or hung (timeout {timeout}s): {tails}")


def multi_worker(tmp: Path, prefix: str, *args: str) -> list[subprocess.Popen]:
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    return [launch(tmp, f"{prefix}{i}", "--strategy", "multi_worker", "--replicas", "2", *args,
                   tf_config=config({"worker": hosts}, "worker", i)) for i in range(2)]


def result(tmp: Path, name: str) -> tuple[dict, dict]:
    return dict(np.load(tmp / f"{name}.npz")), json.loads((tmp / f"{name}.npz.json").read_text())


def assert_same_training(a: dict, b: dict, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(b["losses"], a["losses"], atol=tol, rtol=0)
    np.testing.assert_allclose(b["val"], a["val"], atol=tol, rtol=0)
    weights = [k for k in a if k.startswith("w/")]
    assert weights and sorted(weights) == sorted(k for k in b if k.startswith("w/"))
    for k in weights:
        np.testing.assert_allclose(b[k], a[k], atol=tol, rtol=0, err_msg=k)


COMMON = ("--steps", "5", "--accumulate", "2", "--seed", "3")
BF16_SGD = ("--precision", "bf16", "--optimizer", "sgd")  # Adam would magnify bf16 rounding


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Started together: one process with the global batch 4 (fp32 Adam, and bf16 SGD), then
    batch 2 per replica on two replicas: `multi_worker` on two processes (fp32 Adam) and `mirrored`
    on two logical CPUs (bf16 SGD). All with two averaged micro-batches per update."""
    tmp = tmp_path_factory.mktemp("dist")
    procs = [
        launch(tmp, "single", "--replicas", "1", "--batch_size", "4", *COMMON),
        launch(tmp, "single_bf16", "--replicas", "1", "--batch_size", "4", *BF16_SGD, *COMMON),
        launch(tmp, "mirrored_bf16", "--strategy", "mirrored", "--logical_cpus", "2",
               "--replicas", "2", "--batch_size", "2", *BF16_SGD, *COMMON),
        *multi_worker(tmp, "worker", "--batch_size", "2", "--run_dir", str(tmp / "run"), *COMMON),
    ]
    wait_all(procs, tmp)
    return tmp


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_equals_one_process(runs):
    single, _ = result(runs, "single_bf16")
    mirrored, info = result(runs, "mirrored_bf16")
    assert info["replicas"] == 2 and len(single["losses"]) == 5
    assert single["traces"] == mirrored["traces"] == 1
    assert_same_training(single, mirrored)


@pytest.mark.slow
def test_multi_worker_on_two_processes_equals_one_process(runs):
    single, _ = result(runs, "single")
    for i in range(2):
        worker, info = result(runs, f"worker{i}")
        assert info["replicas"] == 2 and info["status"] == "finished" and worker["traces"] == 1
        assert info["probe"] == [[0.5, 0.5, 0.5], 41]  # the chief's values reached both
        if i == 0:  # told too, so that it stops instead of waiting for the other
            assert "another worker does not start where this one does" in info["mismatch"]
        else:
            assert "does not start where the chief does: probe 1 (chief: 0)" in info["mismatch"]
        assert_same_training(single, worker)


@pytest.mark.slow
def test_only_the_chief_writes_and_its_checkpoint_holds_the_final_weights(runs):
    from gpt2easy.checkpoint import read_tensors

    (chief, chief_info), other_info = result(runs, "worker0"), result(runs, "worker1")[1]
    assert chief_info["chief"] and not other_info["chief"]
    assert other_info["written"] == []
    assert chief_info["written"] == [str(runs / "run" / "model-5")]
    assert sorted(p.name for p in (runs / "run").iterdir()) == [
        "checkpoint", "model-5.data-00000-of-00001", "model-5.index",
        "model-5.optimizer.data-00000-of-00001", "model-5.optimizer.index",
        "model-5.train.data-00000-of-00001", "model-5.train.index"]
    saved = read_tensors(str(runs / "run" / "model-5"))
    assert int(saved["train/step"]) == 5
    for k in (k for k in chief if k.startswith("w/")):
        np.testing.assert_array_equal(saved[k[2:]], chief[k])


def wait_for_step(path: Path, step: int, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if path.is_file() and path.read_text().strip().isdigit() and int(path.read_text()) >= step:
            return
        time.sleep(0.1)
    for p in procs:
        p.kill()
    wait_all(procs, path.parent, timeout=10)
    pytest.fail(f"workers did not reach step {step} within {timeout}s")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_on_the_other_worker_ends_the_job_with_the_chiefs_save(tmp_path, sig):
    run = tmp_path / "run"
    procs = multi_worker(tmp_path, "w", "--batch_size", "1", "--steps", "1000",
                         "--step_sleep", "0.1", "--eval", "0", "--run_dir", str(run),
                         "--progress", str(tmp_path / "progress"))
    wait_for_step(tmp_path / "progress", 2, procs, TIMEOUT)
    procs[1].send_signal(sig)
    if sig == signal.SIGKILL:
        procs[1].wait(10)
        procs[1].log.close()
        procs = procs[:1]
    wait_all(procs, tmp_path, timeout=60)
    chief_info = result(tmp_path, "w0")[1]
    steps = chief_info["steps"]
    assert chief_info["status"] == ("stopped" if sig == signal.SIGTERM else "peer_failure")
    assert 2 <= steps < 1000 and chief_info["written"] == [str(run / f"model-{steps}")]
    if sig == signal.SIGTERM:  # both stopped after the same step; the other wrote nothing
        other = result(tmp_path, "w1")[1]
        assert other["status"] == "stopped" and other["steps"] == steps and other["written"] == []
    from gpt2easy.checkpoint import read_tensors
    from gpt2easy.locate import find_checkpoint

    assert find_checkpoint(run) == str(run / f"model-{steps}")
    assert int(read_tensors(find_checkpoint(run), ["train/step"])["train/step"]) == steps
