"""runfolder.RunLock (filelock): one training per run folder, across processes; a killed holder
leaves no stale lock."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpt2easy.errors import UserError
from gpt2easy.runfolder import RunLock

HOLD = ("import sys; from pathlib import Path; from gpt2easy.runfolder import RunLock; "
        "lock = RunLock(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()")


def test_a_second_process_is_refused_and_a_killed_holder_frees_the_run(tmp_path, root):
    run = tmp_path / "checkpoint" / "run1"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=r"run1 is in use by another training \(lock on .*\.lock\)"):
            RunLock(run)
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(run)  # the OS dropped the killed process's lock
    with pytest.raises(UserError, match="in use by another training"):
        RunLock(run)  # also within one process
    lock.release()
    lock.release()  # twice is harmless
    RunLock(run).release()


def test_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create"):
        RunLock(blocker / "run1")
