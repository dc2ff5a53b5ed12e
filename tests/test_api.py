"""The Python API (`gpt2easy.download_model/encode/finetune/load`, `Model.generate/stream`) on tiny
random models: the same results as the library functions and scripts behind it, UserErrors with the
scripts' messages, Ctrl+C during `finetune`, and nothing printed."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import gpt2easy
from gpt2easy import UserError
from gpt2easy.checkpoint import read_tensors, write_checkpoint
from gpt2easy.dataset import load_npz, save_npz
from gpt2easy.download import MODEL_FILES
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights, weight_shapes

HP = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=1)
BANNER = re.compile(r"^={40} SAMPLE \d+ ={40}\n", re.M)


@pytest.fixture
def tiny(tmp_path, make_model, monkeypatch):
    """cwd = tmp_path with models/tiny (random weights) and models/blank (no checkpoint), a corpus."""
    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "models" / "tiny", HP, initial_weights(HP, seed=1))
    make_model(tmp_path / "models" / "blank", HP)
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "corpus.npz", [rng.integers(0, 1000, n) for n in (400, 300)], HP.n_vocab)
    return tmp_path


TRAIN = dict(models_dir="models", model_name="blank", learning_rate=1e-3, sample_every=10**6, seed=3,
             batch_size=2)


# --- importing -------------------------------------------------------------------------------


def test_import_and_the_api_names_do_not_import_tensorflow(root):
    code = ("import sys, gpt2easy\n"
            "names = [gpt2easy.download_model, gpt2easy.encode, gpt2easy.finetune, gpt2easy.load,"
            " gpt2easy.FinetuneResult, gpt2easy.UserError]\n"
            "assert gpt2easy.UserError is __import__('gpt2easy.errors').errors.UserError\n"
            "print('tensorflow' in sys.modules)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError):
        gpt2easy.fine_tune  # noqa: B018


# --- finetune --------------------------------------------------------------------------------


def test_finetune_takes_every_train_option_with_the_configs_defaults(monkeypatch, tmp_path):
    from gpt2easy import train_inputs, trainer
    from gpt2easy.cli import resolve_folders

    monkeypatch.chdir(tmp_path)
    np.savez("data.npz", np.arange(10, dtype=np.uint16))  # finetune checks that the data exists

    seen, read = [], object()

    def fake_train(cfg, on_sample=None, inputs=None):
        assert inputs is read  # what finetune read before TensorFlow, not read again
        seen.append(cfg)
        return {"steps": 0, "step": 0, "loss": 1.5, "checkpoint": "c", "samples": "s", "seed": 1}

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(train_inputs, "read_inputs", lambda cfg: read)  # no model folder here
    defaults = {f.name: f.default for f in dataclasses.fields(trainer.TrainConfig) if f.name != "dataset"}
    result = gpt2easy.finetune("data.npz", **defaults)
    assert seen[-1] == resolve_folders(trainer.TrainConfig(dataset="data.npz"))
    assert result == gpt2easy.FinetuneResult(0, 0, 1.5, "c", "s", 1)
    gpt2easy.finetune("data.npz", steps=-1, sample_length=-1, lr_decay_steps=-1)  # the scripts' "none"
    assert seen[-1] == resolve_folders(trainer.TrainConfig(dataset="data.npz"))
    gpt2easy.finetune(Path("data.npz"), batch_size=np.int64(2), models_dir=Path("m"), noise=0)
    assert seen[-1] == trainer.TrainConfig(dataset="data.npz", batch_size=2, models_dir="m", noise=0.0)
    assert type(seen[-1].batch_size) is int and type(seen[-1].noise) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("kw, message", [
    (dict(learning_rat=1e-4), "unknown option learning_rat (did you mean learning_rate?)"),
    (dict(stepz=3), "did you mean steps?"),
    (dict(steps="abc"), "--steps must be"),
    (dict(batch_size=True), "--batch_size must be int"),
    (dict(batch_size=0), "--batch_size must be at least 1, got 0"),
    (dict(top_p=1.5), "--top_p must be between 0 and 1, got 1.5"),
])  # fmt: skip
def test_finetune_refuses_bad_options_before_any_work(tiny, kw, message):
    with pytest.raises(UserError) as e:
        gpt2easy.finetune("corpus.npz", **{**TRAIN, **kw})
    assert message in str(e.value)
    assert not (tiny / "checkpoint").exists()


@pytest.mark.parametrize("kw, message", [
    (dict(model_name="nope"), "nope"),  # no such model folder
    (dict(dataset="broken.npz"), "broken.npz"),  # not a token archive
])  # fmt: skip
def test_finetune_refuses_a_bad_model_or_dataset_without_importing_tensorflow(tiny, root, kw, message):
    (tiny / "broken.npz").write_bytes(b"not a zip file")
    options = {"dataset": "corpus.npz", **TRAIN, **kw}
    code = ("import sys, gpt2easy\n"
            f"try:\n    gpt2easy.finetune(**{options!r})\n"
            "except gpt2easy.UserError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tiny)
    assert out.returncode == 0, out.stderr
    error, imported = out.stdout.strip().splitlines()
    assert message in error and imported == "False", out.stdout
    assert not (tiny / "checkpoint").exists()


def test_finetune_twice_continues_and_equals_the_trainer(tiny, capfd):
    from gpt2easy.trainer import TrainConfig, train

    first = gpt2easy.finetune("corpus.npz", run_name="api", steps=2, **TRAIN)
    second = gpt2easy.finetune(tiny / "corpus.npz", run_name="api", steps=3, **TRAIN)
    assert (first.steps, first.step, second.steps, second.step) == (2, 2, 3, 5)
    assert second.checkpoint == os.path.join("checkpoint", "api", "model-5") and second.seed == 3
    assert np.isfinite(second.loss)
    assert capfd.readouterr().out == ""  # the library prints nothing
    direct = train(TrainConfig(dataset="corpus.npz", run_name="direct", steps=5, **TRAIN))
    assert direct["loss"] == pytest.approx(second.loss, abs=1e-5)
    api, ref = read_tensors("checkpoint/api/model-5"), read_tensors("checkpoint/direct/model-5")
    for name in weight_shapes(HP):
        np.testing.assert_allclose(api[name], ref[name], atol=1e-6, rtol=0)


def test_training_samples_go_to_on_sample_not_stdout(tiny, capfd):
    got = []
    gpt2easy.finetune("corpus.npz", **{**TRAIN, "sample_every": 2, "sample_length": 4},
                      steps=2, on_sample=got.append)  # fmt: skip
    assert len(got) == 1 and "SAMPLE 1" in got[0]
    assert capfd.readouterr().out == ""


class _AtStep(logging.Handler):
    """Calls `action` once when the trainer logs the step line of update `step`."""

    def __init__(self, step: int, action):
        super().__init__()
        self.step, self.action = step, action

    def emit(self, record):
        if record.getMessage().startswith(f"[{self.step} |"):
            self.action()


@pytest.fixture
def at_step():
    logger = logging.getLogger("gpt2easy.trainer")
    added, level = [], logger.level
    logger.setLevel(logging.INFO)

    def add(step, action):
        added.append(_AtStep(step, action))
        logger.addHandler(added[-1])

    yield add
    for h in added:
        logger.removeHandler(h)
    logger.setLevel(level)


@pytest.fixture
def python_ctrl_c():
    """Ctrl+C as an interactive Python has it (KeyboardInterrupt), whatever this process was started
    with (a background job of a non-interactive shell starts with SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_sigint_during_finetune_saves_and_restores_the_handler(tiny, at_step, python_ctrl_c):
    before = signal.getsignal(signal.SIGINT)
    at_step(2, lambda: signal.raise_signal(signal.SIGINT))  # Ctrl+C while update 2 is logged
    result = gpt2easy.finetune("corpus.npz", run_name="stopped", **TRAIN)  # no steps: until Ctrl+C
    assert (result.steps, result.step) == (2, 2)
    assert result.checkpoint.endswith("model-2") and (tiny / "checkpoint/stopped/model-2.index").is_file()
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):  # the next Ctrl+C interrupts as usual
        signal.raise_signal(signal.SIGINT)


def test_sigint_from_another_thread_stops_training(tiny, at_step):
    started = threading.Event()
    at_step(1, started.set)

    def ctrl_c():
        started.wait(120)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=ctrl_c)
    thread.start()
    result = gpt2easy.finetune("corpus.npz", run_name="killed", **TRAIN)
    thread.join()
    assert result.steps >= 1 and (tiny / f"{result.checkpoint}.index").is_file()
    again = gpt2easy.finetune("corpus.npz", run_name="killed", steps=1, **TRAIN)  # and it resumes
    assert again.step == result.step + 1


def test_finetune_runs_in_a_thread_without_signal_handlers(tiny):
    before = signal.getsignal(signal.SIGINT)
    results = []
    thread = threading.Thread(target=lambda: results.append(
        gpt2easy.finetune("corpus.npz", run_name="threaded", steps=1, **TRAIN)))
    thread.start()
    thread.join()
    assert results and results[0].step == 1
    assert signal.getsignal(signal.SIGINT) is before


# --- load and generate -----------------------------------------------------------------------


def samples_of(stdout: str) -> list[str]:
    """The sample texts in the interactive script's output (banner, text, newline; ===== per prompt)."""
    texts = []
    for block in stdout.split("=" * 80 + "\n"):
        texts += [t[:-1] for t in BANNER.split(block)[1:]]
    return texts


OPTIONS = [
    dict(length=8, seed=7, top_k=10),
    dict(length=12, seed=11, temperature=0.7, top_p=0.9, repetition_penalty=1.3, nsamples=4,
         batch_size=2),
    dict(length=10, seed=5, stop=["e", "a"], stop_at_endoftext=False),
]  # fmt: skip


def script_samples(root, script, options, stdin="") -> list[str]:
    args = [a for k, v in options.items() for a in (f"--{k}", str(v).replace("'", '"'))]
    out = subprocess.run(
        [sys.executable, str(root / script), "--models_dir", "models", "--model_name", "tiny", *args],
        input=stdin, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    return samples_of(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS)
def test_generate_gives_the_scripts_text(tiny, root, options):
    prompts = ["Hello there", "Once upon a time"]
    expected = script_samples(root, "interactive_conditional_samples.py", options,
                              "".join(p + "\n" for p in prompts))  # fmt: skip
    assert len(expected) == len(prompts) * options.get("nsamples", 1) and any(expected)
    model = gpt2easy.load(models_dir="models", model_name="tiny")
    assert model.generate(prompts, **options) == expected
    if "nsamples" not in options:
        assert "".join(model.stream(prompts[1], **options)) == expected[1]


@pytest.mark.slow
def test_the_empty_prompt_gives_the_unconditional_scripts_text(tiny, root):
    options = dict(length=9, seed=8, top_k=30, nsamples=4, batch_size=2)
    expected = script_samples(root, "generate_unconditional_samples.py", options)
    assert len(expected) == 4 and any(expected)
    assert gpt2easy.load(models_dir="models", model_name="tiny").generate("", **options) == expected


def test_stream_pieces_join_to_the_generated_text(tiny):
    model = gpt2easy.load(models_dir="models", model_name="tiny")
    pieces = list(model.stream("Hello", length=20, seed=4, top_k=50))
    assert len(pieces) > 1
    assert "".join(pieces) == model.generate("Hello", length=20, seed=4, top_k=50)[0]
    texts = model.generate(["Hello", "Hello", ""], length=20, seed=4, top_k=50)
    assert texts[0] == texts[1] == "".join(pieces) and len(texts) == 3


def test_two_models_in_one_process(tiny):
    run_dir = tiny / "checkpoint" / "run1"
    (run_dir).mkdir(parents=True)
    for name in ("hparams.json", "encoder.json", "vocab.bpe"):
        (run_dir / name).write_bytes((tiny / "models/tiny" / name).read_bytes())
    write_checkpoint(run_dir, 3, initial_weights(HP, seed=2))
    write_checkpoint(run_dir, 5, initial_weights(HP, seed=3))
    a = gpt2easy.load(models_dir="models", model_name="tiny")
    greedy = dict(length=10, temperature=0)
    a_text = a.generate("The", **greedy)
    b = gpt2easy.load(run_name="run1")
    step3 = gpt2easy.load(checkpoint=run_dir / "model-3")
    assert b.checkpoint.endswith("model-5") and step3.checkpoint.endswith("model-3")
    assert len({a_text[0], b.generate("The", **greedy)[0], step3.generate("The", **greedy)[0]}) == 3
    assert a.generate("The", **greedy) == a_text  # the first model is untouched by the others
    assert gpt2easy.load(checkpoint=run_dir).generate("The", **greedy) == b.generate("The", **greedy)


@pytest.mark.parametrize("kw, message", [
    (dict(temprature=0.5), "unknown option temprature (did you mean temperature?)"),
    (dict(precision="bf16"), "precision is an option of load"),
    (dict(top_p=1.5), "--top_p must be between 0 and 1, got 1.5"),
    (dict(nsamples=3, batch_size=2), "--nsamples (3) must be a multiple of --batch_size (2)"),
    (dict(length=33), "--length must be at most n_ctx (32) for this model, got 33"),
    (dict(stop=""), "--stop strings must not be empty"),
    (dict(stop_at_endoftext="no"), "--stop_at_endoftext must be bool"),
    (dict(temperature="hot"), "--temperature must be"),
])  # fmt: skip
def test_generate_errors_are_the_scripts_messages(tiny, kw, message):
    model = gpt2easy.load(models_dir="models", model_name="tiny")
    with pytest.raises(UserError) as e:
        model.generate("Hi", **kw)
    assert message in str(e.value)
    if "nsamples" not in kw:
        with pytest.raises(UserError):
            model.stream("Hi", **kw)  # raised at the call, not at the first piece


def test_load_errors(tiny):
    with pytest.raises(UserError, match="model 'nope' not found in models .available: blank, tiny"):
        gpt2easy.load(models_dir="models", model_name="nope")
    with pytest.raises(UserError, match="run 'nothing' not found"):
        gpt2easy.load(run_name="nothing")
    with pytest.raises(UserError, match="--precision must be one of auto, fp32, bf16"):
        gpt2easy.load(models_dir="models", model_name="tiny", precision="fp8")
    with pytest.raises(UserError, match="--model_name must be str, got 124"):
        gpt2easy.load(model_name=124)
    with pytest.raises(UserError, match="prompts must be strings"):
        gpt2easy.load(models_dir="models", model_name="tiny").generate([1, 2])


# --- encode and download ---------------------------------------------------------------------


def test_encode_matches_the_reference_encoder(tiny, ref):
    text = "Friends, Romans, countrymen, lend me your ears;\nI come to bury Caesar. \u00e9\u00e8 naïve"
    (tiny / "a.txt").write_text(text, encoding="utf-8")
    stats = gpt2easy.encode("a.txt", "a.npz", models_dir="models", model_name="tiny", progress=False)
    (chunk,) = load_npz(tiny / "a.npz")
    assert chunk.tolist() == ref.encode(text)
    assert (stats.files, stats.tokens, stats.chunks) == (1, len(chunk), 1)
    with pytest.raises(UserError, match="--combine must be at least 0, got -1"):
        gpt2easy.encode("a.txt", "b.npz", models_dir="models", model_name="tiny", combine=-1)
    with pytest.raises(UserError, match="no such file|not found|does not exist"):
        gpt2easy.encode("missing.txt", "b.npz", models_dir="models", model_name="tiny")
    assert not (tiny / "b.npz").exists()


def test_the_readme_example_end_to_end_offline(tiny, monkeypatch):
    """download_model (from a local mirror) -> encode -> finetune -> load -> generate."""
    from test_download import FakeServer

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    src = tiny / "models" / "tiny"
    files = {name: (src / name).read_bytes() if (src / name).exists() else b"meta" for name in MODEL_FILES}
    server = FakeServer({"124M": files})
    try:
        result = gpt2easy.download_model("117M", "mirror", base_url=server.url, progress=False)
    finally:
        server.close()
    assert sorted(result.downloaded) == sorted(MODEL_FILES) and result.folder.name == "124M"
    (tiny / "corpus.txt").write_text("To be, or not to be, that is the question.\n" * 40)
    gpt2easy.encode("corpus.txt", "corpus2.npz", models_dir="mirror", progress=False)
    done = gpt2easy.finetune("corpus2.npz", models_dir="mirror", model_name="124M", run_name="run1",
                             steps=2, sample_every=10**6, seed=1)  # fmt: skip
    assert done.step == 2
    model = gpt2easy.load(run_name="run1")
    texts = model.generate(["To be, or not", "Once upon a time"], length=10, temperature=0.8,
                           top_k=40, seed=1)  # fmt: skip
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(UserError, match="unknown model"):
        gpt2easy.download_model("125M", "mirror")


def test_export_from_python_is_export_py(tiny):
    """gpt2easy.export builds ExportConfig like the command line: same options, same checks."""
    from gpt2easy.checkpoint import read_tensors

    result = gpt2easy.export("models/tiny", "out-openai", format="openai")
    assert result["format"] == "openai" and (tiny / "out-openai" / "model.ckpt.index").is_file()
    exported, original = read_tensors("out-openai/model.ckpt"), read_tensors("models/tiny/model.ckpt")
    assert set(exported) == set(original)
    for name in original:
        np.testing.assert_array_equal(exported[name], original[name])
    with pytest.raises(UserError, match="unknown option fromat .did you mean format"):
        gpt2easy.export("models/tiny", "o2", fromat="hf")
    with pytest.raises(UserError, match="--dtype must be one of float32, bfloat16, float16"):
        gpt2easy.export("models/tiny", "o3", dtype="int8")
    assert not (tiny / "o2").exists() and not (tiny / "o3").exists()
