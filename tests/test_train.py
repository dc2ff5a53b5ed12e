"""Training: optimizer math, schedule, the compiled step, and the loop in-process on a tiny model."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import runfolder
from gpt2easy.checkpoint import load_weights, read_tensors
from gpt2easy.dataset import save_npz
from gpt2easy.errors import UserError
from gpt2easy.hparams import HParams
from gpt2easy.locate import open_model
from gpt2easy.model import GPT2, initial_weights, weight_shapes
from gpt2easy.optim import Optimizer, Schedule
from gpt2easy.step import StepConfig, TrainStep, add_noise
from gpt2easy.trainer import TrainConfig, train

HP = HParams(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)


# --- optimizer and schedule ------------------------------------------------------------------


def test_schedule_warmup_then_cosine_and_linear():
    s = Schedule(1.0, warmup_steps=4, decay="cosine", decay_steps=14, min_lr=0.1)
    assert [s(i) for i in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert s(4) == pytest.approx(1.0)
    assert s(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert s(14) == pytest.approx(0.1) and s(100) == pytest.approx(0.1)
    lin = Schedule(1.0, decay="linear", decay_steps=10)
    assert lin(5) == pytest.approx(0.5)
    assert Schedule(2e-5)(12345) == 2e-5  # the classic constant rate


@pytest.mark.parametrize("kwargs", [dict(learning_rate=0), dict(decay="cosine", decay_steps=0),
                                    dict(decay="exp"), dict(min_lr=1.0)])
def test_schedule_refuses_bad_settings(kwargs):
    with pytest.raises(UserError):
        Schedule(**{"learning_rate": 0.1, **kwargs})


def adam_reference(w, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    """TF1 AdamOptimizer in numpy (epsilon after the square root, bias correction in the rate)."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return w, m, v


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_optimizer_matches_reference(kind):
    rng = np.random.default_rng(0)
    w0 = {"a/w": rng.normal(size=(3, 4)).astype(np.float32), "a/b": rng.normal(size=4).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in w0.items()} for _ in range(3)]
    weights = {k: tf.Variable(v) for k, v in w0.items()}
    wd = 0.1 if kind == "adamw" else 0.0
    opt = Optimizer(kind, weights, weight_decay=wd)
    for step, g in enumerate(grads):
        opt.apply({k: tf.constant(v) for k, v in g.items()}, tf.constant(0.01), tf.constant(step))
    for name in w0:
        gs = [g[name] for g in grads]
        if kind == "sgd":
            expected = w0[name] - 0.01 * sum(gs)
        else:
            decay = wd if w0[name].ndim >= 2 else 0.0  # biases are not decayed
            expected, m, v = adam_reference(w0[name], gs, 0.01, wd=decay)
            np.testing.assert_allclose(opt.slots[f"optimizer/{name}/m"].numpy(), m, rtol=1e-5)
            np.testing.assert_allclose(opt.slots[f"optimizer/{name}/v"].numpy(), v, rtol=1e-4)
        np.testing.assert_allclose(weights[name].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_optimizer_refuses_unknown_name_and_misplaced_weight_decay():
    with pytest.raises(UserError, match="--optimizer"):
        Optimizer("adagrad", {})
    with pytest.raises(UserError, match="adamw"):
        Optimizer("adam", {}, weight_decay=0.1)


# --- the compiled step -----------------------------------------------------------------------


def make_step(seed=0, kind="sgd", **cfg):
    gpt = GPT2(HP, initial_weights(HP, seed))
    opt = Optimizer(kind, gpt.weights)
    return gpt, TrainStep(gpt, opt, StepConfig(**{"batch_size": 2, "window": 8, **cfg}))


def batch(seed, shape):
    return np.random.default_rng(seed).integers(0, HP.n_vocab, size=shape).astype(np.int32)


def test_step_traces_once_and_learns():
    gpt, step = make_step(kind="adam")
    rows = batch(0, (1, 2, 9))
    losses = [step(rows, 1e-2, i)[0] for i in range(8)]
    assert step.tracing_count() == 1
    assert losses[-1] < losses[0] - 0.5


def test_accumulation_averages_micro_batches():
    """Two micro-batches of 2 rows == one batch of 4 rows (both are means over all tokens)."""
    rows = batch(1, (2, 2, 9))
    gpt_a, acc = make_step(accumulate=2)
    gpt_b, whole = make_step(batch_size=4)
    acc(rows, 0.5, 0)
    whole(rows.reshape(1, 4, 9), 0.5, 0)
    for name in gpt_a.weights:
        np.testing.assert_allclose(gpt_a.weights[name].numpy(), gpt_b.weights[name].numpy(),
                                   atol=2e-6)


def test_grad_clip_limits_the_update_norm():
    w0 = initial_weights(HP, 0)
    gpt, step = make_step(grad_clip=1e-3)
    step(batch(2, (1, 2, 9)), 1.0, 0)  # sgd with lr 1: the update is the clipped gradient
    delta = np.sqrt(sum(np.sum((v.numpy() - w0[k]) ** 2) for k, v in gpt.weights.items()))
    assert delta == pytest.approx(1e-3, rel=1e-3)


def test_noise_is_stateless_and_spares_targets():
    tokens = tf.zeros([4, 50], tf.int32)
    seed = tf.constant([3, 4], tf.int64)
    a = add_noise(tokens, 0.5, 1000, seed).numpy()
    assert np.array_equal(a, add_noise(tokens, 0.5, 1000, seed).numpy())
    assert 0.3 < np.mean(a != 0) < 0.7 and a.max() < 1000
    assert np.array_equal(add_noise(tokens, 0.0, 1000, seed).numpy(), np.zeros([4, 50]))


def test_only_transformer_layers_leaves_embeddings_alone():
    gpt = GPT2(HP, initial_weights(HP, 0))
    trained = {n: v for n, v in gpt.weights.items() if "/h" in n}
    step = TrainStep(gpt, Optimizer("adam", trained), StepConfig(batch_size=1, window=8))
    step(batch(3, (1, 1, 9)), 1e-2, 0)
    w0 = initial_weights(HP, 0)
    for name in ("model/wte", "model/wpe", "model/ln_f/g"):
        np.testing.assert_array_equal(gpt.weights[name].numpy(), w0[name])
    assert not np.array_equal(gpt.weights["model/h0/mlp/c_fc/w"].numpy(), w0["model/h0/mlp/c_fc/w"])


@pytest.mark.parametrize("variant", [dict(recompute=True), dict(jit=True)])
def test_memory_saving_and_xla_steps_equal_the_plain_step(variant):
    rows = batch(5, (2, 2, 9))
    plain, s0 = make_step(kind="adam", accumulate=2)
    other, s1 = make_step(kind="adam", accumulate=2, **variant)
    for i in range(2):
        assert s1(rows, 1e-2, i)[0] == pytest.approx(s0(rows, 1e-2, i)[0], rel=1e-5)
    for name in plain.weights:
        # Adam divides by sqrt(v): rounding differences of near-zero gradients show up at ~1e-5.
        np.testing.assert_allclose(other.weights[name].numpy(), plain.weights[name].numpy(),
                                   atol=5e-5)


@pytest.mark.parametrize("kw", [dict(), dict(accumulate=2, precision="bf16")])
def test_xla_step_takes_its_tokens_as_an_argument(kw):
    """The XLA program is compiled once per run: the tokens are a parameter of it, not constants
    baked in. (Calling one traced block per layer made TensorFlow need the forward pass's shapes
    as compile-time constants, fold the whole pass with that step's tokens and weights, and
    compile again on every step: 18.3 s per step of the demo's shape instead of 0.58.)"""
    _, step = make_step(kind="adam", jit=True, **kw)
    accumulate = kw.get("accumulate", 1)
    args = (tf.constant(batch(5, (accumulate, 2, 9))), tf.constant(1e-2), tf.constant(0, tf.int64),
            tf.constant(0.0))
    hlo = step.dist.fn.experimental_get_compiler_ir(*args)(stage="hlo")
    entry = hlo[hlo.index("\nENTRY") :].split("\n")[1]
    assert f"s32[{accumulate},2,9]" in entry
    # No float array folded from the weights (the causal mask is a constant, rightly).
    assert not re.search(r"= (f32|bf16)\[\d[^\]]*\]\S* constant\(", hlo)


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_xla_step_is_the_same_program_whatever_the_seed(noise):
    """The XLA cache keys a program by its HLO: a seed baked in as a constant made every `--xla`
    run with a new (random) seed compile and cache its step anew. The seed is a value it reads."""
    args = (tf.constant(batch(5, (2, 2, 9))), tf.constant(1e-2), tf.constant(0, tf.int64),
            tf.constant(0.0))
    constants = []
    for seed in (1, 2):
        gpt = GPT2(HP, initial_weights(HP, 0))
        step = TrainStep(gpt, Optimizer("adam", gpt.weights),
                         StepConfig(batch_size=2, window=8, accumulate=2, noise=noise, seed=seed,
                                    jit=True))  # fmt: skip
        hlo = step.dist.fn.experimental_get_compiler_ir(*args)(stage="hlo")
        constants.append(sorted(re.findall(r"constant\(([^)]*)\)", hlo)))
    assert constants[0] == constants[1]


def test_bf16_step_tracks_fp32():
    rows = batch(4, (1, 2, 9))
    gpt32, s32 = make_step(kind="adam")
    gpt16, s16 = make_step(kind="adam", precision="bf16")
    l32 = [s32(rows, 1e-2, i)[0] for i in range(5)]
    l16 = [s16(rows, 1e-2, i)[0] for i in range(5)]
    np.testing.assert_allclose(l16, l32, rtol=2e-2)


# --- the loop --------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path, make_model, monkeypatch):
    """A model folder with hparams and vocabulary but no checkpoint, a corpus, cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "models" / "tiny", HP)
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "corpus.npz", [rng.integers(0, HP.n_vocab, n) for n in (400, 300)], HP.n_vocab)
    return tmp_path


def config(**kw) -> TrainConfig:
    base = dict(dataset="corpus.npz", models_dir="models", model_name="tiny", learning_rate=1e-3,
                sample_every=10**6, save_every=10**6, seed=3, steps=4, noise=0.1,
                accumulate_gradients=2, batch_size=2)
    return TrainConfig(**{**base, **kw})


def weights_of(prefix):
    return read_tensors(str(prefix))


def test_resume_is_exact(tiny):
    """N steps, stop, M more == N + M steps in one go (fp32, same seed): weights within 1e-6."""
    train(config(run_name="once", steps=6))
    train(config(run_name="twice", steps=2))
    summary = train(config(run_name="twice", steps=4))
    assert summary["step"] == 6 and summary["checkpoint"].endswith("model-6")
    once, twice = weights_of("checkpoint/once/model-6"), weights_of("checkpoint/twice/model-6")
    assert once.keys() == twice.keys()
    assert any(k.startswith("optimizer/") for k in once)
    for name in weight_shapes(HP):
        np.testing.assert_allclose(once[name], twice[name], atol=1e-6, rtol=0)
    assert (tiny / "checkpoint/twice/counter").read_text() == "6\n"


def test_run_folder_is_a_model_folder_and_loads_in_a_tf1_graph(tiny):
    train(config(steps=2))
    run = tiny / "checkpoint" / "run1"
    assert {"hparams.json", "encoder.json", "vocab.bpe", "checkpoint", "counter"} <= {
        p.name for p in run.iterdir()}
    _, ours = load_weights(run, HP)
    # The classic tools: a TF1 graph with variables under scope `model`, a Saver restoring by name.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        with tf.compat.v1.variable_scope("model"):
            tf1 = {name: tf.compat.v1.get_variable(name[len("model/"):], shape)
                   for name, shape in weight_shapes(HP).items()}
        tf.compat.v1.train.Saver(tf1).restore(sess, tf.train.latest_checkpoint(str(run)))
        for name, var in tf1.items():
            np.testing.assert_array_equal(sess.run(var), ours[name])
    # Copied elsewhere, it is a model folder the sampling side opens directly.
    shutil.copytree(run, tiny / "models" / "shakespeare")
    hp, folder, prefix = open_model("models", "shakespeare")
    assert hp == HP and prefix.endswith("model-2")
    np.testing.assert_array_equal(load_weights(prefix, hp)[1]["model/wte"], ours["model/wte"])


def test_restore_paths_and_counter(tiny, caplog):
    caplog.set_level(logging.INFO)
    train(config(steps=3, save_every=2, max_checkpoints=0))
    assert "training from scratch (random init)" in caplog.text
    run = tiny / "checkpoint" / "run1"
    assert {"model-2.index", "model-3.index"} <= {p.name for p in run.iterdir()}
    s = train(config(run_name="from_prefix", restore_from="checkpoint/run1/model-2", steps=1))
    assert s["step"] == 3  # continues from the prefix's step
    s = train(config(run_name="from_folder", restore_from="checkpoint/run1", steps=1))
    assert s["step"] == 4
    s = train(config(restore_from="fresh", steps=1, run_name="fresh"))
    assert s["step"] == 1  # fresh: base model (here: random init), counter from 0
    with pytest.raises(UserError, match="not a checkpoint"):
        train(config(run_name="bad", restore_from="checkpoint/run1/model-7"))


def test_lock_refuses_a_second_trainer(tiny):
    lock = runfolder.RunLock(tiny / "checkpoint" / "run1")
    try:
        with pytest.raises(UserError, match="in use by another training"):
            train(config())
    finally:
        lock.release()
    train(config(steps=1))  # free again


def test_tiny_corpus_trains_on_shorter_windows(tiny, caplog):
    save_npz(tiny / "small.npz", [np.arange(20) % HP.n_vocab], HP.n_vocab)
    s = train(config(dataset="small.npz", steps=2))
    assert s["steps"] == 2 and "19-token windows instead of 32" in caplog.text


def test_ids_beyond_the_vocabulary_are_refused_before_training(tiny):
    save_npz(tiny / "big.npz", [np.array([1, 2, 299, 300, 5])], 50257)
    with pytest.raises(UserError, match="outside the vocabulary"):
        train(config(dataset="big.npz"))
    assert not (tiny / "checkpoint" / "run1" / "counter").exists()


def test_samples_and_validation(tiny, caplog):
    caplog.set_level(logging.INFO)
    shown = []
    train(config(steps=2, sample_every=2, sample_num=3, sample_length=5, val_every=1,
                 val_batch_count=2), on_sample=shown.append)
    text = (tiny / "samples" / "run1" / "samples-2").read_text()
    assert [f"======== SAMPLE {i} ========" in text for i in (1, 2, 3)] == [True] * 3
    assert shown == [text]
    assert caplog.text.index("saved checkpoint") < caplog.text.index("wrote samples")
    assert caplog.text.count("validation loss") == 2  # at the start and after step 1


def test_samples_read_the_current_weights(tiny):
    from gpt2easy.sample_writer import SampleWriter

    gpt = GPT2(HP, initial_weights(HP, 0))
    kw = dict(seed=1, length=6, num=1, batch_size=2, top_k=40, top_p=0.0, precision="fp32",
              encoding="utf-8")
    writer = SampleWriter(gpt, tiny / "models" / "tiny", tiny / "s", **kw)
    before = writer.generate(7, (1, 2))
    gpt.assign(initial_weights(HP, 1))
    after = writer.generate(7, (1, 2))
    fresh = SampleWriter(GPT2(HP, initial_weights(HP, 1)), tiny / "models" / "tiny", tiny / "s", **kw)
    np.testing.assert_array_equal(after, fresh.generate(7, (1, 2)))
    assert not np.array_equal(before, after)


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "--batch_size"), (dict(learning_rate=0), "--learning_rate"),
    (dict(optimizer="adagrad"), "--optimizer"), (dict(sample_length=40), "--sample_length"),
    (dict(noise=1.5), "--noise"), (dict(precision="fp16"), "--precision"),
    (dict(top_p=2.0), "--top_p"), (dict(lr_decay="cosine", steps=None), "--lr_decay"),
])
def test_bad_flags_are_one_line_errors(tiny, kw, match):
    with pytest.raises(UserError, match=match):
        train(config(**kw))


def test_checkpoint_state_entries(tiny):
    train(config(steps=2))
    t = read_tensors("checkpoint/run1/model-2")
    assert int(t["train/step"]) == 2 and int(t["train/seed"]) == 3
    assert json.loads(t["train/sampler"].decode())["bit_generator"] == "PCG64"
    assert t["optimizer/model/wte/m"].shape == (HP.n_vocab, HP.n_embd)
