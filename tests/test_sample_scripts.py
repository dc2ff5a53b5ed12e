"""The two sampling scripts end to end, in subprocesses, on a tiny random model in OpenAI's layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2easy.checkpoint import write_checkpoint
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights

HP = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=1)
BANNER = "=" * 40 + " SAMPLE {} " + "=" * 40

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory, make_model) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_model(root / "tiny", HP, initial_weights(HP, seed=1))
    return root


def run(script, root, *args, stdin="", cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(root / script), *map(str, args)],
        input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
    )  # fmt: skip


def interactive(root, models, *args, stdin="Hello\n"):
    name = () if "--model_name" in args else ("--model_name", "tiny")  # a flag given twice is an error
    return run("interactive_conditional_samples.py", root, "--models_dir", models, *name, *args,
               stdin=stdin)  # fmt: skip


def test_interactive_piped_prompts(root, models):
    out = interactive(root, models, "--length", 5, "--nsamples", 4, "--batch_size", 2, "--seed", 7,
                      "--top_k", 10, stdin="Hello\n\nworld\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    banners = [line for line in lines if line.startswith("=" * 40)]
    expected = [BANNER.format(n) for n in range(1, 5)] + ["=" * 80]
    assert banners == expected * 2  # two prompts (the empty line is skipped), 4 samples each
    assert "Model prompt" not in out.stdout
    assert "Traceback" not in out.stderr
    again = interactive(root, models, "--length", 5, "--nsamples", 4, "--batch_size", 2, "--seed", 7,
                        "--top_k", 10, stdin="Hello\n\nworld\n")  # fmt: skip
    assert again.returncode == 0 and again.stdout == out.stdout  # same seed, same text


def test_interactive_end_of_input_exits_quietly(root, models):
    out = interactive(root, models, stdin="")
    assert out.returncode == 0 and out.stdout == "" and "Traceback" not in out.stderr


def test_interactive_from_a_run_and_a_chosen_checkpoint(root, models, tmp_path, make_model):
    run_dir = make_model(tmp_path / "checkpoint" / "run1", HP)
    write_checkpoint(run_dir, 3, initial_weights(HP, seed=2))
    newest = write_checkpoint(run_dir, 5, initial_weights(HP, seed=3))
    args = ("--length", 6, "--temperature", 0)
    by_run = run("interactive_conditional_samples.py", root, "--run_name", "run1", *args,
                 stdin="Hi\n", cwd=tmp_path)  # fmt: skip
    by_prefix = run("interactive_conditional_samples.py", root, "--checkpoint", newest, *args,
                    stdin="Hi\n", cwd=tmp_path)  # fmt: skip
    by_step3 = run("interactive_conditional_samples.py", root, "--checkpoint",
                   run_dir / "model-3", *args, stdin="Hi\n", cwd=tmp_path)  # fmt: skip
    for out in (by_run, by_prefix, by_step3):  # a crash's empty output must not pass as "different"
        assert out.returncode == 0 and out.stdout.startswith(BANNER.format(1)), out.stderr[-2000:]
    assert by_run.stdout == by_prefix.stdout != by_step3.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--nsamples", 3, "--batch_size", 2), "multiple of --batch_size"),
        (("--top_p", 2), "--top_p"),
        (("--temperature", "hot"), "--temperature must be a number"),
        (("--length", 100), "at most n_ctx (32)"),
        (("--precision", "fp16"), "--precision"),
        (("--model_name", "nope"), "available: tiny"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(root, models, args, message):
    out = interactive(root, models, *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(own_lines(out.stderr)) == 1, out.stderr


def own_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's C++ start-up lines (absl logs them before TF_CPP_MIN_LOG_LEVEL
    is read; not ours to print, not ours to silence)."""
    noise = ("I0000 ", "E0000 ", "W0000 ", "WARNING: All log messages before absl")
    return [line for line in stderr.strip().splitlines() if not line.startswith(noise)]


def test_folder_without_checkpoint(root, tmp_path, make_model):
    make_model(tmp_path / "empty", HP)
    out = interactive(root, tmp_path, "--model_name", "empty")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_unconditional_numbering_and_output_file(root, models, tmp_path):
    target = tmp_path / "samples.txt"
    out = run("generate_unconditional_samples.py", root, "--models_dir", models, "--model_name",
              "tiny", "--nsamples", 4, "--batch_size", 2, "--length", 4, "--seed", 1,
              "--output", target)  # fmt: skip
    assert out.returncode == 0, out.stderr
    banners = [line for line in out.stdout.splitlines() if line.startswith("=" * 40)]
    assert banners == [BANNER.format(n) for n in range(1, 5)]
    assert target.read_text(encoding="utf-8") == out.stdout
    assert f"wrote 4 samples to {target}" in out.stderr


def test_unconditional_forever_stops_cleanly_on_ctrl_c(root, models, tmp_path):
    import signal
    import time

    target = tmp_path / "forever.txt"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, str(root / "generate_unconditional_samples.py"), "--models_dir",
         str(models), "--model_name", "tiny", "--length", "3", "--output", str(target)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # Python raises KeyboardInterrupt only if SIGINT is at its default when it starts; a test
        # run launched in the background by a shell inherits it ignored (then this hung).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline and BANNER.format(3) not in seen:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "wrote " in err
    assert target.read_text(encoding="utf-8").startswith(BANNER.format(1))


def test_interactive_on_a_terminal_shows_the_prompt_line(root, models):
    """On a terminal (a pty here, as stdin, stdout and stderr: Python's input() writes its prompt to
    stderr on a terminal) the classic `Model prompt >>> ` line asks for each prompt; an empty answer
    asks again; end of input (Ctrl+D) exits 0."""
    from pty_util import Terminal

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    term = Terminal([sys.executable, str(root / "interactive_conditional_samples.py"), "--models_dir",
                     str(models), "--model_name", "tiny", "--length", "4", "--seed", "1"], env)  # fmt: skip
    try:
        term.read_until(b"Model prompt >>> ")
        term.type(b"\n")  # empty: asked again
        term.read_until(b"Model prompt >>> ", 2)
        term.type(b"Hello\n")
        term.read_until(b"=" * 80)
        term.read_until(b"Model prompt >>> ", 3)
        term.type(b"\x04")  # Ctrl+D: end of input
        assert term.wait() == 0
    finally:
        term.close()
    text = term.text
    assert text.count("Model prompt >>> ") == 3 and "Prompt should not be empty!" in text
    assert "Model prompt >>> Hello\n" + BANNER.format(1) + "\n" in text  # the echo, then the sample


def test_ctrl_c_while_sampling_interrupts_at_the_next_write():
    """Ctrl+C during the unconditional loop becomes KeyboardInterrupt at the next write (a safe
    point in Python), never inside TensorFlow's C code; the old handler is back afterwards."""
    import io
    import signal

    from gpt2easy.sample_commands import InterruptAtWrites

    before = signal.getsignal(signal.SIGINT)
    buffer = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        with InterruptAtWrites(buffer) as out:
            out.write("one ")
            signal.raise_signal(signal.SIGINT)  # handled: nothing raised here
            out.flush()
            out.write("two")  # raised here
    assert buffer.getvalue() == "one "
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_launch_compiles_nothing(root, models, tmp_path):
    # The XLA cache is keyed by the compiled programs, names included: a second launch with the
    # same settings must find every program the first one compiled (none added), whatever order
    # its threads ran in (reading the weights beside the vocabulary must not rename anything).
    cache = tmp_path / "cache"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GPT2EASY_CACHE": str(cache)}
    env.pop("GPT2EASY_XLA_CACHE", None)
    argv = [sys.executable, str(root / "interactive_conditional_samples.py"), "--models_dir",
            str(models), "--model_name", "tiny", "--length", "6", "--seed", "3", "--top_k", "5"]

    def launch() -> tuple[str, list[str]]:
        out = subprocess.run(argv, input="Hello\n", capture_output=True, text=True, timeout=300,
                             env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout, sorted(p.name for p in cache.rglob("xla_compile_cache*"))

    first, programs = launch()
    assert len(programs) == 2  # the prompt pass and the step
    for _ in range(2):
        assert launch() == (first, programs)
