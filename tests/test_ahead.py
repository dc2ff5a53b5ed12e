"""The interactive script on a terminal asks for the first prompt at once and loads meanwhile (`ahead`).

A pseudo-terminal stands for the user's; the tiny random model of the server tests. What the load
logs (`--verbose`) is held while the prompt is typed and shown after it, so its place in the output
tells whether the prompt came first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from pty_util import Terminal
from serve_util import tiny_models  # noqa: F401 (fixture)

from gpt2easy.hparams import HParams
from gpt2easy.locate import DATA_SUFFIX
from gpt2easy.model import initial_weights

pytestmark = pytest.mark.slow
PROMPT = "Model prompt >>> "
LOADED = "weights: "  # sample.load_opened's debug line, once the weights are read
FLAGS = ("--length", "8", "--seed", "3", "--top_k", "20")


@pytest.fixture(scope="module")
def env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def terminal(root, env, models, *args, name="tiny", stdout=None) -> Terminal:
    argv = [sys.executable, str(root / "interactive_conditional_samples.py"), "--models_dir",
            str(models), "--model_name", name, *FLAGS, *args]  # fmt: skip
    return Terminal(argv, env, stdout=stdout)


@pytest.fixture(scope="module")
def piped(root, env, tiny_models):  # noqa: F811
    """The plain run's stdout for the prompt "Hello there" from a pipe."""
    out = subprocess.run([sys.executable, str(root / "interactive_conditional_samples.py"),
                          "--models_dir", str(tiny_models), "--model_name", "tiny", *FLAGS],
                         input="Hello there\n", capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_prompt_comes_first_and_the_text_is_the_plain_runs(root, env, tiny_models, piped):  # noqa: F811
    term = terminal(root, env, tiny_models, "--verbose")
    try:
        term.read_until(PROMPT.encode())
        assert LOADED not in term.text  # nothing of the load shown yet: it is held, or not done
        term.type(b"Hello there\n")
        term.read_until(b"=" * 80)
        term.read_until(PROMPT.encode(), 2)
        term.type(b"\x04")
        assert term.wait() == 0
    finally:
        term.close()
    text = term.text
    first = text.index(PROMPT)
    assert first < text.index(LOADED) < text.index(" SAMPLE 1 "), text  # loaded after the prompt
    assert piped in text.replace("\n" + PROMPT, "\n")  # the same samples, banners and all
    assert "Traceback" not in text


def test_output_to_a_file_while_typing(root, env, tiny_models, tmp_path, piped):  # noqa: F811
    """`> out.txt` with the prompts typed: the prompt and the load's lines on the terminal, the
    samples in the file, the load still behind the first prompt."""
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        term = terminal(root, env, tiny_models, "--verbose", stdout=f)
        try:
            term.read_until(PROMPT.encode())
            assert LOADED not in term.text
            term.type(b"Hello there\n")
            term.read_until(PROMPT.encode(), 2)
            term.type(b"\x04")
            assert term.wait() == 0
        finally:
            term.close()
    assert out.read_text() == piped
    assert term.text.index(PROMPT) < term.text.index(LOADED) and "SAMPLE" not in term.text


@pytest.fixture(scope="module")
def deep(tmp_path_factory, make_model):
    """12 narrow layers: seconds of XLA compilation (with the compile cache off), the window in
    which stopping the loading thread made TensorFlow abort the process (signal 6 or 11)."""
    root = tmp_path_factory.mktemp("deep")
    hp = HParams(n_vocab=50257, n_ctx=64, n_embd=64, n_head=2, n_layer=12)
    make_model(root / "deep", hp, initial_weights(hp, seed=1))
    return root


def test_leaving_while_it_loads_is_clean(root, env, deep):
    """Ctrl+D or Ctrl+C at the first prompt, before the model is ready, at moments spread over the
    import, the load and the compilation: exit 0 or 130 at once, never TensorFlow's abort of a
    thread stopped mid-call (before the fix, 2 of 6 such exits crashed)."""
    env = {**env, "GPT2EASY_XLA_CACHE": "0"}
    for i, delay in enumerate((0.0, 1.5, 3.0, 4.0, 5.0, 6.0, 7.0)):
        term = terminal(root, env, deep, name="deep")
        try:
            term.read_until(PROMPT.encode())
            time.sleep(delay)
            if i % 2:
                term.proc.send_signal(signal.SIGINT)
            else:
                term.type(b"\x04")
            code = term.wait(timeout=30)
        finally:
            term.close()
        if i % 2:
            assert (code, term.text) == (130, PROMPT + "interactive_conditional_samples.py: interrupted\n")
        else:
            assert (code, term.text) == (0, PROMPT + "\n"), delay


def test_a_load_error_comes_after_the_prompt_as_one_line(root, env, tiny_models, tmp_path):  # noqa: F811
    broken = tmp_path / "models"
    shutil.copytree(tiny_models / "tiny", broken / "tiny")
    data = next((broken / "tiny").glob("*" + DATA_SUFFIX))
    data.write_bytes(data.read_bytes()[:100])  # truncated: readable names, unreadable values
    term = terminal(root, env, broken)
    try:
        term.read_until(PROMPT.encode())
        term.type(b"Hello\n")
        code = term.wait(timeout=120)
    finally:
        term.close()
    lines = term.text.splitlines()
    assert code == 2 and lines[0] == PROMPT + "Hello", term.text
    assert len(lines) == 2 and lines[1].startswith("interactive_conditional_samples.py: error: "), lines
    assert "corrupt" in lines[1]


def test_a_missing_model_is_said_before_any_prompt(root, env, tiny_models):  # noqa: F811
    term = terminal(root, env, tiny_models, name="nope")
    try:
        code = term.wait(timeout=60)
    finally:
        term.close()
    assert code == 2 and PROMPT not in term.text
    assert term.text.startswith("interactive_conditional_samples.py: error: ") and term.text.count("\n") == 1
