"""Storage faults (issue 7): failing writes while saving a checkpoint leave the previous one intact
with a clear UserError; a truncated or corrupted newest checkpoint is detected when loading (a folder
falls back to the previous good one with a warning, an explicit path is a clear error).

Write failures are simulated three ways: monkeypatched I/O calls (every step of a save), a real
size limit (RLIMIT_FSIZE, EFBIG) in a subprocess, and a real full disk (a tiny tmpfs, when this
process may mount one).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from gpt2easy import checkpoint as ck
from gpt2easy import files, locate, runfolder
from gpt2easy.errors import UserError
from gpt2easy.hparams import HParams
from gpt2easy.model import initial_weights

HP = HParams(n_vocab=64, n_ctx=16, n_embd=8, n_head=2, n_layer=2)
DATA = locate.DATA_SUFFIX
ROOT = Path(__file__).resolve().parents[1]


def weights(seed: int) -> dict[str, np.ndarray]:
    return initial_weights(HP, seed=seed)


def run_state(step: int) -> dict:
    """What runfolder.save adds to the weights: optimizer slots and loop state."""
    w = weights(step)
    slots = {f"optimizer/{n}/{s}": np.full_like(v, step + (s == "v"))
             for n, v in w.items() for s in ("m", "v")}
    return dict(w, **slots)


def save_run(folder: Path, step: int, save_optimizer: str = "all") -> str:
    return runfolder.save(folder, step, weights(step), {k: v for k, v in run_state(step).items()
                                                         if k.startswith("optimizer/")},
                          seed=5, sampler_state={"pos": step}, avg_loss=(1.0, 2.0),
                          optimizer="adam", max_to_keep=5, save_optimizer=save_optimizer)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_intact(folder: Path, before: dict[str, bytes], step: int) -> None:
    """The folder is byte-for-byte what it was, no temporary file is left, and the newest
    checkpoint still loads with the weights it had."""
    after = snapshot(folder)
    assert sorted(after) == sorted(before), "files appeared or vanished"
    assert after == before
    prefix, loaded = ck.load_weights(folder, HP)
    assert prefix == str(folder / f"model-{step}")
    for name, value in weights(step).items():
        np.testing.assert_array_equal(loaded[name], value)


# --- failing writes while saving (in-process, every step of a save) -----------------------------

def _eio(*args, **kwargs):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _save_fails(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")


class _FailingReplace:
    """os.replace that works `ok` times, then fails (a crash between the renames of a save)."""

    def __init__(self, ok: int):
        self.ok, self.real = ok, os.replace

    def __call__(self, src, dst, *args, **kwargs):
        if self.ok <= 0:
            _eio()
        self.ok -= 1
        return self.real(src, dst, *args, **kwargs)


WRITE_FAULTS = {
    "SaveV2 out of space": (tf.raw_ops, "SaveV2", _save_fails),
    "SaveV2 I/O error": (tf.raw_ops, "SaveV2",
                         lambda **kw: (_ for _ in ()).throw(tf.errors.DataLossError(None, None, "EIO"))),
    "fsync of bundle fails": (os, "fsync", _eio),
    # Renames of a save: model-6.train data and index, model-6.optimizer data and index, then
    # model-6 data and index (the commit), then the state file.
    "rename of loop state data fails": (os, "replace", _FailingReplace(0)),
    "rename of loop state index fails": (os, "replace", _FailingReplace(1)),
    "rename of optimizer data fails": (os, "replace", _FailingReplace(2)),
    "rename of optimizer index fails": (os, "replace", _FailingReplace(3)),
    "rename of data file fails": (os, "replace", _FailingReplace(4)),
    "rename of index fails": (os, "replace", _FailingReplace(5)),
    "state file write fails": (Path, "write_bytes", _enospc),
    "state file rename fails": (os, "replace", _FailingReplace(6)),
    "temp file creation fails": (files.tempfile, "mkstemp", _enospc),
}


@pytest.mark.parametrize("fault", WRITE_FAULTS)
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fault):
    folder = tmp_path / "run"
    save_run(folder, 3)
    before = snapshot(folder)
    owner, attr, replacement = WRITE_FAULTS[fault]
    if isinstance(replacement, _FailingReplace):
        replacement = _FailingReplace(replacement.ok)
    monkeypatch.setattr(owner, attr, replacement)
    with pytest.raises(UserError, match=r"cannot (write|create)") as e:
        save_run(folder, 6)
    monkeypatch.undo()
    assert "\n" not in str(e.value)
    # A save that failed after renaming its data file may leave model-6's data without an index
    # (never loaded: incomplete), or a complete model-6 not yet named in the state file, with
    # any of its sibling files (model-6.train, model-6.optimizer); nothing else may change.
    leftovers = {n for n in snapshot(folder) if n.startswith("model-6")}
    assert not any(n.startswith(".") for n in snapshot(folder)), "temporary files left behind"
    main = {n for n in leftovers if not n.startswith(("model-6.train.", "model-6.optimizer."))}
    assert main in (set(), {f"model-6{DATA}"}, {"model-6.index", f"model-6{DATA}"})
    if main != {"model-6.index", f"model-6{DATA}"}:
        assert locate.candidates(folder) == [str(folder / "model-3")]
        assert runfolder.find_start("latest", folder, None, HP).prefix == str(folder / "model-3")
    for name in leftovers:
        (folder / name).unlink()
    assert_intact(folder, before, 3)
    # The run can go on: the next save works.
    save_run(folder, 9)
    assert ck.load_weights(folder, HP)[0] == str(folder / "model-9")


def _fsize_child(folder: Path, limit: int) -> subprocess.CompletedProcess:
    """A process whose files may not grow beyond `limit` bytes (EFBIG) saves model-6 to `folder`."""
    code = f"""
import resource, signal, sys
sys.path.insert(0, {str(ROOT / 'tests')!r}); sys.path.insert(0, {str(ROOT / 'src')!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from test_faults_storage import save_run
from gpt2easy.errors import UserError
try:
    save_run(__import__('pathlib').Path({str(folder)!r}), 6)
except UserError as e:
    print(e, file=sys.stderr); sys.exit(2)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.slow
def test_file_size_limit_while_saving(tmp_path):
    """A real failing write (EFBIG from RLIMIT_FSIZE) inside TensorFlow's writer."""
    folder = tmp_path / "run"
    save_run(folder, 3)
    before = snapshot(folder)
    limit = (folder / f"model-3{DATA}").stat().st_size // 2
    proc = _fsize_child(folder, limit)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert "cannot write checkpoint" in message and "previous checkpoint is intact" in message
    assert_intact(folder, before, 3)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, timeout=30)
    return result.returncode == 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (skips where mounting is not permitted)."""
    path = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _mount_tmpfs(path, "256k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root, so this runs there; a user's "
                    "namespace mount would be invisible to this process); RLIMIT_FSIZE covers EFBIG")
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_full_disk_while_saving(tiny_disk):
    """A real full disk (ENOSPC): the failed save leaves the previous checkpoint, frees its
    temporary files, and saving works again once there is room."""
    folder = tiny_disk / "run"
    save_run(folder, 3)
    before = snapshot(folder)
    filler = tiny_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last block
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(UserError, match="cannot write") as e:
        save_run(folder, 6)
    assert "\n" not in str(e.value)
    assert_intact(folder, before, 3)
    filler.unlink()
    save_run(folder, 6)
    assert ck.load_weights(folder, HP)[0] == str(folder / "model-6")


# --- damaged newest checkpoint at load ----------------------------------------------------------

def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    data[min(int(len(data) * where), len(data) - 1)] ^= 0x10
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "data truncated to 0": (DATA, lambda p: _truncate(p, 0)),
    "data truncated to half": (DATA, lambda p: _truncate(p, 0.5)),
    "data missing its last byte": (DATA, lambda p: p.write_bytes(p.read_bytes()[:-1])),
    "data bit flip at start": (DATA, lambda p: _flip(p, 0)),
    "data bit flip in the middle": (DATA, lambda p: _flip(p, 0.5)),
    "data bit flip at the end": (DATA, lambda p: _flip(p, 1)),
    "data zeroed": (DATA, lambda p: p.write_bytes(bytes(p.stat().st_size))),
    "index truncated to 0": (".index", lambda p: _truncate(p, 0)),
    "index truncated to half": (".index", lambda p: _truncate(p, 0.5)),
    "index bit flip at start": (".index", lambda p: _flip(p, 0)),
    "index bit flip in the middle": (".index", lambda p: _flip(p, 0.4)),
    "index bit flip at the end": (".index", lambda p: _flip(p, 1)),
    "index replaced by text": (".index", lambda p: p.write_text("not a checkpoint\n")),
}


def _damaged_run(tmp_path: Path, kind: str, run: bool = False) -> Path:
    """Checkpoints 3 and 6, the newest damaged: weights only, or a training run's full state."""
    folder = tmp_path / "run"
    for step in (3, 6):
        if run:
            save_run(folder, step)
        else:
            ck.write_checkpoint(folder, step, weights(step))
    suffix, damage = CORRUPTIONS[kind]
    damage(folder / f"model-6{suffix}")
    return folder


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog, kind):
    folder = _damaged_run(tmp_path, kind)
    with caplog.at_level(logging.WARNING):
        prefix, loaded = ck.load_weights(folder, HP)
    assert prefix == str(folder / "model-3")
    assert any("skipping" in r.getMessage() and "model-6" in r.getMessage() for r in caplog.records)
    for name, value in weights(3).items():
        np.testing.assert_array_equal(loaded[name], value)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_damaged_explicit_checkpoint_is_a_clear_error(tmp_path, kind):
    folder = _damaged_run(tmp_path, kind)
    with pytest.raises(UserError, match=r"model-6.*(corrupt|not a checkpoint)") as e:
        ck.load_weights(folder / "model-6", HP)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_training_resume_falls_back_past_a_damaged_checkpoint(tmp_path, caplog, kind):
    """`--restore_from latest` reads weights, optimizer slots and loop state: damage in any of
    them (the loop state is stored last) makes it fall back to the previous checkpoint."""
    folder = _damaged_run(tmp_path, kind, run=True)
    with caplog.at_level(logging.WARNING):
        start = runfolder.find_start("latest", folder, None, HP)
    assert start.step == 3 and start.prefix == str(folder / "model-3")
    assert any("skipping" in r.getMessage() for r in caplog.records)
    assert json.loads(runfolder.state_text(start.extra, "train/sampler")) == {"pos": 3}
    np.testing.assert_array_equal(start.extra["optimizer/model/wte/m"], np.full((64, 8), 3.0))


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path):
    folder = tmp_path / "run"
    for step in (3, 6):
        ck.write_checkpoint(folder, step, weights(step))
        _flip(folder / f"model-{step}{DATA}", 0.5)
    with pytest.raises(UserError, match="model-3.*corrupt") as e:
        ck.load_weights(folder, HP)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("state", ["garbage", "empty", "names a missing checkpoint", "binary"])
def test_damaged_state_file_falls_back_to_the_newest_step(tmp_path, state):
    folder = tmp_path / "run"
    for step in (3, 6):
        save_run(folder, step)
    text = {"garbage": "model_checkpoint_path: ???\n", "empty": "",
            "names a missing checkpoint": 'model_checkpoint_path: "model-99"\n'}
    if state == "binary":
        (folder / locate.STATE_FILE).write_bytes(b"\xff\xfe\x00garbage")
    else:
        (folder / locate.STATE_FILE).write_text(text[state])
    assert ck.load_weights(folder, HP)[0] == str(folder / "model-6")


def test_interrupted_save_leftovers_are_ignored_and_cleaned(tmp_path):
    """What a kill during a save leaves (temporary bundle, data without index) never loads, and the
    next save removes the temporaries."""
    folder = tmp_path / "run"
    save_run(folder, 3)
    (folder / f".tmp-model-6-abcdef12{DATA}").write_bytes(b"partial")
    (folder / ".tmp-model-6-abcdef12.index").write_bytes(b"partial")
    shutil.copy(folder / f"model-3{DATA}", folder / f"model-6{DATA}")  # renamed data, no index
    (folder / ".checkpoint.x1y2.tmp").write_bytes(b"half a state file")
    assert ck.load_weights(folder, HP)[0] == str(folder / "model-3")
    save_run(folder, 9)
    assert not list(folder.glob(".tmp-*"))
    assert ck.load_weights(folder, HP)[0] == str(folder / "model-9")


@pytest.mark.slow
def test_train_py_on_a_full_disk_exits_with_one_clear_line(tmp_path, make_model):
    """train.py whose run folder fills a small disk: the save that does not fit ends the run with
    exit 2 and one line naming it; the previous checkpoint still loads and can be resumed from."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "24m"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root, so this runs there)")
    try:
        hp = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=2)  # ~10 MB a save
        make_model(tmp_path / "models" / "tiny", hp)
        from gpt2easy.dataset import save_npz

        save_npz(tmp_path / "corpus.npz", [np.arange(500) % 1000])
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), "--dataset", "corpus.npz", "--models_dir",
             "models", "--model_name", "tiny", "--checkpoint_dir", str(disk), "--steps", "12",
             "--save_every", "3", "--sample_every", "1000", "--seed", "1"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert re.match(r"train\.py: error: cannot write .*(No space left|space)", last), last
        run_dir = disk / "run1"
        newest = locate.candidates(run_dir)[0]
        assert "saved " in proc.stderr and os.path.basename(newest) in proc.stderr
        hp_loaded = HParams.from_json(run_dir / "hparams.json")
        assert ck.load_weights(run_dir, hp_loaded)[0] == newest
        assert not list(run_dir.glob(".tmp-*")) and not list(run_dir.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


@pytest.mark.parametrize("sibling", [".train", ".optimizer"])
@pytest.mark.parametrize("kind", ["data truncated to half", "index bit flip in the middle"])
def test_damaged_sibling_falls_back_for_training_only(tmp_path, caplog, sibling, kind):
    """Damage in model-6's loop state or optimizer slots: its weights still load (they are whole),
    but a resume, which needs all three, falls back to model-3."""
    folder = tmp_path / "run"
    for step in (3, 6):
        save_run(folder, step)
    suffix, damage = CORRUPTIONS[kind]
    damage(folder / f"model-6{sibling}{suffix}")
    assert ck.load_weights(folder, HP)[0] == str(folder / "model-6")
    with caplog.at_level(logging.WARNING):
        start = runfolder.find_start("latest", folder, None, HP)
    assert start.step == 3 and start.prefix == str(folder / "model-3")
    assert any("skipping" in r.getMessage() and f"model-6{sibling}" in r.getMessage()
               for r in caplog.records)
