"""`--prompts_file`/`--output`: reading prompts files, the JSONL output, resuming after an interrupt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gpt2easy import bulk, sample
from gpt2easy.errors import UserError
from gpt2easy.generate import Generator
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, initial_weights

HP = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=1)
PROMPTS = ["Hello", "It was the best of times", "", "A", "Once upon a time there was", "Why?", "x y z"]


@pytest.fixture(scope="module")
def generator():
    return Generator(GPT2(HP, weights=initial_weights(HP, seed=1)), "fp32")


def records(path):
    return sorted((json.loads(line) for line in path.read_text("utf-8").splitlines()),
                  key=lambda r: (r["line"], r["index"]))  # fmt: skip


def write_prompts(tmp_path, name="prompts.txt"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), "utf-8")
    else:  # "" can't be a line of a text file: blank lines are skipped
        path.write_text("\n".join(p or "   \r" for p in PROMPTS) + "\n", "utf-8")
    return path


def test_read_prompts(tmp_path):
    prompts, lines = bulk.read_prompts(str(write_prompts(tmp_path)))
    assert prompts == [p for p in PROMPTS if p] and lines == [1, 2, 4, 5, 6, 7]
    prompts, lines = bulk.read_prompts(str(write_prompts(tmp_path, "p.jsonl")))
    assert prompts == PROMPTS and lines == list(range(1, 8))
    bad = tmp_path / "bad.jsonl"
    for text, message in [('{"prompt": "a"}\n{"text": "b"}\n', 'line 2: needs a "prompt"'),
                          ('{"prompt": "a"}\nnot json\n', "line 2: not JSON"), ("\n", "no prompts")]:
        bad.write_text(text)
        with pytest.raises(UserError, match=message):
            bulk.read_prompts(str(bad))
    with pytest.raises(UserError, match="does not exist"):
        bulk.read_prompts(str(tmp_path / "missing.txt"))


def test_check_bulk_flags(tmp_path):
    with pytest.raises(UserError, match="--output needs --prompts_file"):
        bulk.check_bulk_flags(None, "out.jsonl", 1)
    with pytest.raises(UserError, match="does not exist"):
        bulk.check_bulk_flags(str(tmp_path / "nope"), None, 1)
    with pytest.raises(UserError, match="--batch_size"):
        bulk.check_bulk_flags(str(write_prompts(tmp_path)), None, 0)


def run(generator, fast, prompts_file, output, settings, out=None):
    return bulk.run_prompts_file(generator, fast, str(prompts_file), output and str(output),
                                 settings, 3, 2, True, out)  # fmt: skip


def test_output_resumes_after_an_interrupt(generator, fast, tmp_path, monkeypatch):
    prompts = write_prompts(tmp_path, "p.jsonl")
    settings = sample.Settings(length=6, seed=9, top_k=30, stop=("e",))
    assert run(generator, fast, prompts, tmp_path / "full.jsonl", settings) == 14
    full = records(tmp_path / "full.jsonl")
    assert [(r["line"], r["index"]) for r in full] == [(n, j) for n in range(1, 8) for j in range(2)]
    for r in full:  # each sample is what its prompt gives alone (the interactive path)
        ids = bulk.prompt_ids(fast, r["prompt"], settings, HP.n_ctx)
        alone = "".join(p for _, p, _ in sample.sample_batch(generator, fast, ids, 1, settings, r["index"]))
        assert r["text"] == alone and r["seed"] == 9 and "e" not in r["text"]

    writes = []
    real = bulk.atomic_write_text

    def interrupted_after_two_batches(path, text):
        real(path, text)
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(bulk, "atomic_write_text", interrupted_after_two_batches)
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run(generator, fast, prompts, part, settings)
    assert len(records(part)) == 6  # two batches of 3 rows, whole lines only
    monkeypatch.undo()
    assert run(generator, fast, prompts, part, settings) == 8  # only what was missing
    assert records(part) == full
    assert run(generator, fast, prompts, part, settings) == 0  # nothing left to do

    other = tmp_path / "other.txt"
    other.write_text("Something else\n")
    with pytest.raises(UserError, match="holds samples of other prompts"):
        run(generator, fast, other, part, settings)


def test_without_output_samples_go_to_stdout_in_prompt_order(generator, fast, tmp_path):
    import io

    out = io.StringIO()
    settings = sample.Settings(length=4, seed=3)
    run(generator, fast, write_prompts(tmp_path), None, settings, out)
    banners = [line for line in out.getvalue().splitlines() if line.startswith("=" * 40)]
    one = [sample.banner(1), sample.banner(2), "=" * 80]
    assert banners == one * 6


@pytest.mark.slow
def test_script_ctrl_c_then_rerun_finishes_the_file(root, tmp_path, make_model):
    models = tmp_path / "models"
    make_model(models / "tiny", HP, initial_weights(HP, seed=1))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(40)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def command(output):
        return [sys.executable, str(root / "interactive_conditional_samples.py"), "--models_dir",
                str(models), "--model_name", "tiny", "--prompts_file", str(prompts), "--output",
                str(output), "--batch_size", "4", "--length", "20", "--seed", "5", "--top_k", "20"]

    part = tmp_path / "part.jsonl"
    proc = subprocess.Popen(command(part), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not (part.exists() and part.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    done = records(part)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert 0 < len(done) < 40
    again = subprocess.run(command(part), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already answered" in again.stderr
    full = tmp_path / "full.jsonl"
    whole = subprocess.run(command(full), capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert records(part) == records(full)
