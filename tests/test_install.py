"""`pip install .` into a fresh virtual environment gives a working `gpt2easy` command (issue 11).

To stay offline and not download TensorFlow again, the fresh environment (made without pip) sees
the test's own environment's packages through a `.pth` line (located from sys.executable), and the
project is installed with `pip install --no-deps --no-build-isolation` from a copy of the clone.
What runs is the installed copy, from a folder outside the clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gpt2easy.hparams import HParams

pytestmark = pytest.mark.slow

HP = HParams(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1)
SKIP = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "build", "dist",
        "checkpoint", "samples", "data"}


def copy_clone(root: Path, dest: Path) -> Path:
    """The project's files without environments, user data or downloaded models."""
    def ignore(folder, names):
        skip = {n for n in names if n in SKIP or n.endswith(".egg-info")}
        if Path(folder).resolve() == (root / "src" / "models").resolve():
            skip |= {n for n in names if n != "README.md"}
        return skip

    shutil.copytree(root, dest, ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory, root) -> Path:
    base = tmp_path_factory.mktemp("install")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / Path(sys.executable).name
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_dev_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    project = copy_clone(root, base / "project")
    r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--no-index", str(project)],
                       cwd=base, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(project)  # what runs from here on is the installed copy
    return bindir


def run(bindir: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPT2EASY_MODELS_DIR")}
    return subprocess.run([str(bindir / "gpt2easy"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**clean, **(env or {})})


def test_installed_help_lists_the_commands(installed, tmp_path):
    r = run(installed, tmp_path, "--help")
    assert r.returncode == 0 and r.stderr == ""
    for name in ("download", "encode", "train", "sample", "generate"):
        assert f"  {name} " in r.stdout
    r = run(installed, tmp_path, "train", "--help")
    assert r.returncode == 0 and "--learning_rate X" in r.stdout and r.stderr == ""
    where = subprocess.run([str(installed / Path(sys.executable).name), "-c",
                            "import gpt2easy; print(gpt2easy.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True).stdout
    assert str(installed.parent) in where  # the installed package, not the clone's src/


def test_installed_encode_and_train(installed, tmp_path, make_model):
    make_model(tmp_path / "mymodels" / "tiny", HP)  # no weights: trains from random init
    (tmp_path / "corpus.txt").write_text("To be, or not to be, that is the question.\n" * 40)
    env = {"GPT2EASY_MODELS_DIR": str(tmp_path / "mymodels")}  # the models folder from the environment
    r = run(installed, tmp_path, "encode", "corpus.txt", "corpus.npz", "--model_name", "tiny", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "corpus.npz").is_file() and "wrote corpus.npz" in r.stderr
    r = run(installed, tmp_path, "train", "--dataset", "corpus.npz", "--model_name", "tiny", "--steps", "2",
            "--sample_every", "100", "--seed", "1", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "checkpoint" / "run1" / "model-2.index").is_file()
    assert "trained 2 steps" in r.stderr.splitlines()[-1]
    r = run(installed, tmp_path, "train", "--dataset", "corpus.npz", "--learning_rat", "1", env=env)
    assert r.returncode == 2
    assert r.stderr == ("gpt2easy train: error: unknown flag --learning_rat "
                        "(did you mean --learning_rate?)\n")
