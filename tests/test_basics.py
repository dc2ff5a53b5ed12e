"""hparams, atomic files, model folders, and the command-line error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpt2easy import cli, files, folders
from gpt2easy.errors import UserError
from gpt2easy.hparams import HParams


def test_hparams_json_round_trip_and_validation(tmp_path):
    hp = HParams(n_vocab=50257, n_ctx=128, n_embd=256, n_head=4, n_layer=4)
    hp.to_json(tmp_path / "hparams.json")
    assert HParams.from_json(tmp_path / "hparams.json") == hp
    with pytest.raises(AttributeError):
        hp.n_layer = 5  # frozen
    (tmp_path / "bad.json").write_text(json.dumps({"n_vocab": 10, "n_ctx": 8, "n_embd": 10, "n_head": 3}))
    with pytest.raises(UserError, match="missing n_layer"):
        HParams.from_json(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(
        json.dumps({"n_vocab": 10, "n_ctx": 8, "n_embd": 10, "n_head": 3, "n_layer": 1}))
    with pytest.raises(UserError, match="multiple of n_head"):
        HParams.from_json(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON"):
        HParams.from_json(tmp_path / "bad.json")
    with pytest.raises(UserError, match="positive integer"):
        HParams(n_layer=0)
    with pytest.raises(UserError, match="not found"):
        HParams.from_json(tmp_path / "missing.json")


def test_atomic_write_replaces_whole_or_nothing(tmp_path):
    target = tmp_path / "out.txt"
    files.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    files.atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_write_to_unwritable_place_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        files.atomic_write_text(blocker / "sub" / "out.txt", "data")


def test_model_dir_lists_what_is_available(tmp_path):
    for name in ("124M", "mine"):
        (tmp_path / name).mkdir()
        HParams().to_json(tmp_path / name / "hparams.json")
    assert folders.model_dir(tmp_path, "124M") == tmp_path / "124M"
    assert folders.model_dir(tmp_path, "117M") == tmp_path / "124M"  # the old name
    with pytest.raises(UserError, match=r"available: 124M, mine.*download_model.py 999M"):
        folders.model_dir(tmp_path, "999M")
    with pytest.raises(UserError, match="missing encoder.json and vocab.bpe"):
        folders.vocab_paths(tmp_path / "124M")


def _script(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "tool.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(folders.Path(cli.__file__).parents[1])!r})\n"
        "from gpt2easy import cli\nfrom gpt2easy.errors import UserError\n" + body
    )
    return subprocess.run([sys.executable, str(script), "--value", "3"], capture_output=True,
                          text=True, timeout=60)


def test_cli_turns_user_errors_into_one_line_and_exit_2(tmp_path):
    result = _script(tmp_path, "def main(value=1):\n    raise UserError(f'bad value {value}')\n"
                               "cli.run(main)\n")
    assert result.returncode == 2
    assert result.stderr == "tool.py: error: bad value 3\n"
    assert result.stdout == ""


def test_cli_ctrl_c_turned_into_another_error_by_native_code_is_still_an_interrupt(tmp_path):
    """TensorFlow's C++ code, interrupted while converting a NumPy array, raised a TypeError /
    SystemError instead of KeyboardInterrupt (CI saw a traceback and exit 1): after a Ctrl+C any
    error is the interrupt, one line and exit 130. Without a Ctrl+C an error stays an error."""
    swallowed = ("import signal\n"
                 "def main(value=1):\n"
                 "    try:\n"
                 "        signal.raise_signal(signal.SIGINT)\n"
                 "    except KeyboardInterrupt:\n"
                 "        pass\n"
                 "    raise SystemError('returned a result with an exception set')\n"
                 "cli.run(main)\n")  # fmt: skip
    result = _script(tmp_path, swallowed)
    assert (result.returncode, result.stderr) == (130, "tool.py: interrupted\n")
    result = _script(tmp_path, "def main(value=1):\n    raise SystemError('real')\ncli.run(main)\n")
    assert result.returncode == 1 and "SystemError: real" in result.stderr


def test_cli_keeps_success_quiet(tmp_path):
    result = _script(tmp_path, "def main(value=1):\n    print(value * 2)\ncli.run(main)\n")
    assert result.returncode == 0 and result.stdout == "6\n" and result.stderr == ""


@pytest.mark.parametrize("freeze", [True, False])
def test_tensorflow_import_pauses_the_collector_and_freezes_for_commands(tmp_path, freeze):
    # The command lines freeze what the import made (faster collections later); the Python API
    # (freeze=False) leaves the caller's objects collectable. Either way the collector runs after.
    result = _script(tmp_path, "import gc\n"
                               f"cli.quiet_tensorflow(freeze={freeze})\n"
                               "print(gc.isenabled(), gc.get_freeze_count())\n")
    assert result.returncode == 0, result.stderr
    enabled, frozen = result.stdout.split()
    assert enabled == "True"
    assert (int(frozen) > 100_000) if freeze else (frozen == "0")
