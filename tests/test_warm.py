"""`--keep_warm`: the sampling scripts served by a resident process give what they give alone.

Each test's launches share a private cache folder (so a warm process of their own), ended after
the module; the server tests' tiny random model in OpenAI's layout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from serve_util import HP, tiny_models  # noqa: F401 (fixture)

from gpt2easy.checkpoint import write_checkpoint
from gpt2easy.model import initial_weights
from gpt2easy.warm import stop_all

SERVED = re.compile(r"using the warm model \(process (\d+)\)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tiny_models):  # noqa: F811
    return tiny_models


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    yield {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GPT2EASY_CACHE": str(cache)}
    stop_all(cache)


def launch(root, env, script, *args, stdin="Hello\n", cwd=None, **popen):
    argv = [sys.executable, str(root / script), *map(str, args)]
    if popen:  # running on; stdin=subprocess.PIPE to write it, else none
        pipe = subprocess.PIPE if stdin == subprocess.PIPE else None
        return subprocess.Popen(argv, env=env, cwd=cwd, text=True, stdin=pipe, **popen)
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)  # fmt: skip


def sample(root, env, models, *args, **kw):
    return launch(root, env, "interactive_conditional_samples.py", "--models_dir", models,
                  "--model_name", "tiny", "--length", 8, "--seed", 3, "--top_k", 20, *args, **kw)  # fmt: skip


def served_by(out) -> int:
    found = SERVED.search(out.stderr)
    assert found, out.stderr[-2000:]
    return int(found.group(1))


def test_warm_launches_give_the_text_of_a_plain_one(root, env, models):
    plain = sample(root, env, models, stdin="Hello\nworld\n")
    first = sample(root, env, models, "--keep_warm", 1, "--verbose", stdin="Hello\nworld\n")
    second = sample(root, env, models, "--keep_warm", 1, "--verbose", stdin="Hello\nworld\n")
    for out in (plain, first, second):
        assert out.returncode == 0 and "SAMPLE 1" in out.stdout, out.stderr[-2000:]
    assert first.stdout == second.stdout == plain.stdout
    assert served_by(first) == served_by(second)  # the process the first launch started
    assert "loaded already" in second.stderr and "loaded already" not in first.stderr


def test_unconditional_script_too(root, env, models):
    args = ("--models_dir", models, "--model_name", "tiny", "--length", 6, "--seed", 2, "--nsamples", 2)
    plain = launch(root, env, "generate_unconditional_samples.py", *args)
    warm = launch(root, env, "generate_unconditional_samples.py", *args, "--keep_warm", 1)
    assert plain.returncode == warm.returncode == 0, warm.stderr[-2000:]
    assert warm.stdout == plain.stdout and "wrote 2 samples" in warm.stderr


def test_user_errors_come_back_as_one_line(root, env, models, tmp_path):
    out = sample(root, env, models, "--run_name", "nope", "--keep_warm", 1, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "interactive_conditional_samples.py: error: run 'nope' not found: checkpoint/nope does not "
        "exist (train one with: python train.py --run_name nope ...)"
    ]


def test_new_checkpoint_is_loaded_not_the_remembered_one(root, env, models, tmp_path, make_model):
    run_dir = make_model(tmp_path / "checkpoint" / "run1", HP)
    write_checkpoint(run_dir, 3, initial_weights(HP, seed=2))
    before = sample(root, env, models, "--run_name", "run1", "--keep_warm", 1, cwd=tmp_path)
    write_checkpoint(run_dir, 5, initial_weights(HP, seed=4))
    after = sample(root, env, models, "--run_name", "run1", "--keep_warm", 1, cwd=tmp_path)
    plain = sample(root, env, models, "--run_name", "run1", cwd=tmp_path)
    assert before.returncode == after.returncode == plain.returncode == 0, after.stderr[-2000:]
    assert after.stdout == plain.stdout != before.stdout


def test_ctrl_c_busy_and_after(root, env, models):
    """Ctrl+C stops the command in the warm process as it stops it here; while it runs another
    launch runs by itself; afterwards the process serves again."""
    sample(root, env, models, "--keep_warm", 1)  # the process is up
    forever = launch(root, env, "generate_unconditional_samples.py", "--models_dir", models,
                     "--model_name", "tiny", "--length", 6, "--nsamples", 0, "--keep_warm", 1,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert "SAMPLE" in forever.stdout.readline()
        busy = sample(root, env, models, "--keep_warm", 1)
        plain = sample(root, env, models)
        assert busy.returncode == 0 and busy.stdout == plain.stdout, busy.stderr[-2000:]
        assert "busy with another launch" in busy.stderr
        forever.send_signal(signal.SIGINT)
        _, err = forever.communicate(timeout=60)
    finally:
        forever.kill()
    assert forever.returncode == 0 and re.search(r"wrote \d+ samples", err), err[-2000:]
    assert "Traceback" not in err
    time.sleep(1)
    again = sample(root, env, models, "--keep_warm", 1, "--verbose")
    assert again.returncode == 0 and again.stdout == plain.stdout and "loaded already" in again.stderr


def test_the_process_ends_after_its_idle_minutes(root, tmp_path, models):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GPT2EASY_CACHE": str(tmp_path)}
    out = sample(root, env, models, "--keep_warm", 0.02, "--verbose")
    assert out.returncode == 0, out.stderr[-2000:]
    pid = served_by(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGTERM)
        pytest.fail("the warm process outlived its --keep_warm minutes")
    assert not list((tmp_path / "warm").glob("*.sock"))  # its socket went with it


def test_two_first_launches_at_once_start_one_process(root, tmp_path, models):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GPT2EASY_CACHE": str(tmp_path)}
    args = [sys.executable, str(root / "interactive_conditional_samples.py"), "--models_dir",
            str(models), "--model_name", "tiny", "--length", "8", "--keep_warm", "1"]  # fmt: skip
    args += ["--seed", "3"]
    both = [subprocess.Popen(args, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for _ in range(2)]  # fmt: skip
    try:
        outs = [p.communicate("Hello\n", timeout=300) for p in both]
    finally:
        for p in both:
            p.kill()
        logs = "".join(log.read_text() for log in (tmp_path / "warm").glob("*.log"))
        pids = re.findall(r"warm process (\d+) listening", logs)
        stop_all(tmp_path)
    assert [p.returncode for p in both] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert outs[0][0] == outs[1][0] and "SAMPLE 1" in outs[0][0]
    assert len(pids) == 1  # one listened; the other start found it (or ran here, if busy)
    assert "did not start" not in outs[0][1] + outs[1][1]


def test_prompts_file_and_output_relative_to_the_launch(root, env, models, tmp_path):
    (tmp_path / "prompts.txt").write_text("Hello\nOnce upon a time\nThe end\n", encoding="utf-8")
    for name, extra in (("plain", ()), ("warm", ("--keep_warm", 1))):
        out = sample(root, env, models, "--prompts_file", "prompts.txt", "--output", f"{name}.jsonl",
                     "--batch_size", 2, *extra, cwd=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
    plain = (tmp_path / "plain.jsonl").read_text(encoding="utf-8")
    assert plain.count("\n") == 3 and (tmp_path / "warm.jsonl").read_text(encoding="utf-8") == plain


def test_output_closed_early_is_not_an_error(root, env, models):
    """`... | head`: the launch exits 0 without a traceback; the process serves the next launch."""
    first = sample(root, env, models, "--keep_warm", 1, "--verbose")
    reader = sample(root, env, models, "--keep_warm", 1, "--nsamples", 200,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    reader.stdin.write("Hello\n")
    reader.stdin.close()
    assert "SAMPLE 1" in reader.stdout.readline()
    reader.stdout.close()
    err = reader.stderr.read()
    assert reader.wait(timeout=60) == 0 and "Traceback" not in err, err[-2000:]
    time.sleep(1)
    again = sample(root, env, models, "--keep_warm", 1, "--verbose")
    assert again.returncode == 0 and served_by(again) == served_by(first)
    assert again.stdout == first.stdout
