"""Checkpoint I/O: OpenAI's layout, strict loading by name, atomic writes, fallback, classic TF1 reads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import checkpoint as ck
from gpt2easy import locate
from gpt2easy.errors import UserError
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights, weight_shapes

HP = HParams(n_vocab=64, n_ctx=16, n_embd=8, n_head=2, n_layer=2)


@pytest.fixture
def weights():
    return initial_weights(HP, seed=7)


def test_weight_names_and_shapes_are_openais():
    shapes = weight_shapes(HParams())
    assert len(shapes) == 148
    assert shapes["model/h0/attn/c_attn/w"] == (1, 768, 2304)
    assert shapes["model/h11/mlp/c_proj/w"] == (1, 3072, 768)
    assert shapes["model/wpe"] == (1024, 768)
    assert sum(int(np.prod(s)) for s in shapes.values()) == HParams().n_params() == 124_439_808


def test_openai_layout_round_trip(tmp_path, weights):
    ck.write_openai_checkpoint(tmp_path, weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint", "model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    assert 'model_checkpoint_path: "model.ckpt"' in (tmp_path / "checkpoint").read_text()
    prefix = locate.find_checkpoint(tmp_path)
    assert prefix == str(tmp_path / "model.ckpt")
    loaded = ck.read_weights(prefix, HP)
    assert loaded.keys() == weights.keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_strict_loading_reports_every_problem_at_once(tmp_path, weights):
    broken = dict(weights)
    del broken["model/h1/ln_2/g"]
    broken["model/h9/extra"] = np.zeros(3, np.float32)
    broken["model/wpe"] = np.zeros((8, 8), np.float32)
    broken["optimizer/model/wte/m"] = np.zeros(3, np.float32)  # ignored on purpose
    ck.write_openai_checkpoint(tmp_path, broken)
    with pytest.raises(UserError) as e:
        ck.read_weights(locate.find_checkpoint(tmp_path), HP)
    message = str(e.value)
    assert "missing (1): model/h1/ln_2/g" in message
    assert "unexpected (1): model/h9/extra" in message
    assert "wrong shape (1): model/wpe [8, 8] != [16, 8]" in message
    assert "optimizer" not in message and "\n" not in message


def test_checkpoint_for_another_size_is_named(tmp_path, weights):
    ck.write_openai_checkpoint(tmp_path, weights)
    bigger = HParams(n_vocab=64, n_ctx=16, n_embd=16, n_head=2, n_layer=3)
    with pytest.raises(UserError, match=r"checkpoint has n_vocab=64, n_embd=8, n_layer=2"):
        ck.read_weights(locate.find_checkpoint(tmp_path), bigger)


def test_run_checkpoints_keep_newest_and_state_file_is_relative(tmp_path, weights):
    run = tmp_path / "checkpoint" / "run1"
    for step in (100, 200, 300, 400):
        ck.write_checkpoint(run, step, weights, max_to_keep=2)
    names = sorted(p.name for p in run.iterdir())
    assert names == ["checkpoint", "model-300.data-00000-of-00001", "model-300.index",
                     "model-400.data-00000-of-00001", "model-400.index"]
    state = (run / "checkpoint").read_text()
    assert str(tmp_path) not in state and 'model_checkpoint_path: "model-400"' in state
    # TF's own reader agrees with ours.
    assert tf.train.latest_checkpoint(str(run)) == str(run / "model-400")
    # A moved copy (the classic "copy the run into src/models/NAME" step) still loads.
    moved = tmp_path / "models" / "shakespeare"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    assert ck.load_weights(moved, HP)[0] == str(moved / "model-400")


def test_truncated_newest_checkpoint_falls_back_but_explicit_path_fails(tmp_path, weights, caplog):
    run = tmp_path / "run"
    ck.write_checkpoint(run, 1, weights)
    newer = {k: v + 1 for k, v in weights.items()}
    ck.write_checkpoint(run, 2, newer)
    data = run / "model-2.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    prefix, loaded = ck.load_weights(run, HP)
    assert prefix == str(run / "model-1")
    np.testing.assert_array_equal(loaded["model/wte"], weights["model/wte"])
    assert "falling back" in caplog.text
    with pytest.raises(UserError, match="unreadable or corrupt"):
        ck.load_weights(run / "model-2", HP)


def test_half_written_checkpoint_is_invisible(tmp_path, weights):
    """A save killed between renaming the data file and the index leaves the old one as latest."""
    run = tmp_path / "run"
    ck.write_checkpoint(run, 1, weights)
    (run / "model-2.data-00000-of-00001").write_bytes(b"partial")
    (run / ".tmp-model-2-deadbeef.index").write_bytes(b"partial")
    assert locate.find_checkpoint(run) == str(run / "model-1")
    ck.write_checkpoint(run, 3, weights)
    assert not list(run.glob(".tmp-*"))


def test_failed_write_leaves_previous_checkpoint(tmp_path, weights, monkeypatch):
    run = tmp_path / "run"
    ck.write_checkpoint(run, 1, weights)

    def broken_save(**kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.raw_ops, "SaveV2", broken_save)
    with pytest.raises(UserError, match="No space left on device.*previous checkpoint is intact"):
        ck.write_checkpoint(run, 2, weights)
    assert locate.find_checkpoint(run) == str(run / "model-1")
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint", "model-1.data-00000-of-00001", "model-1.index"]


def test_prefix_and_file_arguments(tmp_path, weights):
    ck.write_checkpoint(tmp_path, 5, weights)
    for given in ("model-5", "model-5.index", "model-5.data-00000-of-00001"):
        assert locate.find_checkpoint(tmp_path / given) == str(tmp_path / "model-5")
    for bad in (tmp_path / "model-6", tmp_path / "nowhere"):
        with pytest.raises(UserError, match="not a checkpoint"):
            locate.find_checkpoint(bad)
    with pytest.raises(UserError, match="no checkpoint found"):
        locate.find_checkpoint(tmp_path / "..")


def test_classic_tf1_graph_restores_our_checkpoint(tmp_path, weights):
    """The classic tools build the graph under variable_scope('model') and restore by name."""
    ck.write_checkpoint(tmp_path, 10, {**weights, "train/step": np.int64(10)})
    graph = tf.Graph()
    with graph.as_default():
        with tf.compat.v1.variable_scope("model"):
            variables = {
                f"model/{name}": tf.compat.v1.get_variable(name, shape)
                for name, shape in (("wte", [64, 8]), ("h1/attn/c_attn/w", [1, 8, 24]), ("ln_f/b", [8]))
            }
        saver = tf.compat.v1.train.Saver(list(variables.values()))
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, tf.train.latest_checkpoint(str(tmp_path)))
            for name, var in variables.items():
                np.testing.assert_array_equal(sess.run(var), weights[name])


def _state(step: int, weights: dict) -> dict:
    """What a training save holds besides the weights: optimizer slots and loop state."""
    slots = {f"optimizer/{n}/{s}": np.full_like(v, step) for n, v in weights.items() for s in "mv"}
    return {**slots, "train/step": np.int64(step),
            "train/sampler": np.array(b'{"pos": 1}', dtype=object)}


def _tf1_restore_every_variable(prefix: str, weights: dict) -> None:
    """gpt-2-simple's load_gpt2 / OpenAI's sampling code: a TF1 graph of exactly the model/
    variables, restored by a Saver that insists on each of them."""
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.get_variable(name, value.shape)
                     for name, value in weights.items()}
        saver = tf.compat.v1.train.Saver(list(variables.values()))
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, prefix)
            for name, var in variables.items():
                np.testing.assert_array_equal(sess.run(var), weights[name])


def test_training_checkpoint_holds_only_weights_and_keeps_its_state_beside(tmp_path, weights):
    """Weight readers that take every entry as a weight (transformers' TF reader did: it crashed on
    `train/...` text, then on `optimizer/...`) see only OpenAI's model/ names in model-N."""
    run = tmp_path / "run"
    prefix = ck.write_checkpoint(run, 10, {**weights, **_state(10, weights)})
    listed = dict(tf.train.list_variables(prefix))
    assert sorted(listed) == sorted(weights)
    assert all(listed[k] == list(v.shape) for k, v in weights.items())
    assert tf.train.latest_checkpoint(str(run)) == prefix
    assert locate.candidates(run) == [prefix]  # the siblings are not checkpoints of their own
    _tf1_restore_every_variable(prefix, weights)
    state = ck.read_tensors(prefix)  # weights and both siblings
    assert int(state["train/step"]) == 10 and state["optimizer/model/wte/m"].shape == (64, 8)
    assert {n[len(prefix):] for n in map(str, run.iterdir()) if n.startswith(prefix)} == {
        ".index", locate.DATA_SUFFIX, ".train.index", f".train{locate.DATA_SUFFIX}",
        ".optimizer.index", f".optimizer{locate.DATA_SUFFIX}"}


@pytest.mark.parametrize("policy", ck.SAVE_OPTIMIZER)
def test_save_optimizer_policy(tmp_path, weights, policy):
    from gpt2easy import runfolder

    run = tmp_path / "run"
    for step in (1, 2, 3):
        slots = {k: v for k, v in _state(step, weights).items() if k.startswith("optimizer/")}
        runfolder.save(run, step, weights, slots, seed=1, sampler_state={}, avg_loss=(0.0, 0.0),
                       optimizer="adam", max_to_keep=2, save_optimizer=policy)
    have = {step for step in (1, 2, 3) if (run / f"model-{step}.optimizer.index").exists()}
    assert have == {"newest": {3}, "all": {2, 3}, "none": set()}[policy]
    assert not (run / "model-1.train.index").exists() and not (run / "model-1.index").exists()
    for step in (2, 3):  # loop state and weights stay with every kept checkpoint
        start = runfolder.find_start(str(run / f"model-{step}"), run, None, HP)
        assert start.step == step and "train/seed" in start.extra
        assert ("optimizer/model/wte/m" in start.extra) == (step in have)


def test_old_run_folder_with_state_inside_model_n_still_resumes(tmp_path, weights):
    """Run folders written before the split hold optimizer/ and train/ inside model-N."""
    from gpt2easy import runfolder

    run = tmp_path / "run"
    run.mkdir()
    ck._write_bundle(run / "model-4", {**weights, **_state(4, weights)})
    ck._write_state(run, ["model-4"])
    assert ck.load_weights(run, HP)[0] == str(run / "model-4")
    start = runfolder.find_start("latest", run, None, HP)
    assert start.step == 4 and start.extra["optimizer/model/wte/v"][0, 0] == 4.0
    # The next save writes the new layout beside it, and both read back.
    runfolder.save(run, 5, weights, {}, seed=1, sampler_state={}, avg_loss=(0.0, 0.0),
                   optimizer="sgd", max_to_keep=5)
    assert sorted(dict(tf.train.list_variables(str(run / "model-5")))) == sorted(weights)
    assert runfolder.find_start("latest", run, None, HP).step == 5


def test_resaving_a_step_replaces_its_siblings(tmp_path, weights):
    """A save over an existing model-N (a `fresh` restart numbers from 0 again) never leaves the
    old optimizer slots beside the new weights."""
    run = tmp_path / "run"
    ck.write_checkpoint(run, 2, {**weights, **_state(2, weights)})
    ck.write_checkpoint(run, 2, {**weights, "train/step": np.int64(2)})
    assert not (run / "model-2.optimizer.index").exists()
    assert "optimizer/model/wte/m" not in ck.read_tensors(str(run / "model-2"))
