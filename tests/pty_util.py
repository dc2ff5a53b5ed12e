"""A command on a pseudo-terminal: what the interactive script's user sees and types."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time


class Terminal:
    """Runs `argv` with a pty as stdin, stdout and stderr (Python's input() writes its prompt to
    stderr on a terminal); `seen` collects every byte the command wrote."""

    def __init__(self, argv: list[str], env: dict, cwd=None, stdout=None):
        """`stdout`: a file for the command's stdout instead of the terminal."""
        self.leader, follower = pty.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=follower, stdout=stdout or follower, stderr=follower, env=env, cwd=cwd,
            close_fds=True,
            # Python raises KeyboardInterrupt only if SIGINT is at its default when it starts
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        os.close(follower)
        self.seen = b""

    def _read(self, wait: float) -> bool:
        if not select.select([self.leader], [], [], wait)[0]:
            return False
        try:
            data = os.read(self.leader, 4096)
        except OSError:  # the command ended and closed its side
            return False
        self.seen += data
        return bool(data)

    def read_until(self, marker: bytes, count: int = 1, timeout: float = 240) -> None:
        """Read until `marker` has been written `count` times in all."""
        deadline = time.time() + timeout
        while self.seen.count(marker) < count:
            assert time.time() < deadline and self.proc.poll() is None, (self.seen, self.proc.poll())
            self._read(1)

    def type(self, keys: bytes) -> None:
        os.write(self.leader, keys)

    def wait(self, timeout: float = 60) -> int:
        """The exit code, once the command ended; what it wrote until then is in `seen`."""
        code = self.proc.wait(timeout=timeout)
        while self._read(0.2):
            pass
        return code

    @property
    def text(self) -> str:
        return self.seen.decode("utf-8", "replace").replace("\r\n", "\n")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.leader)
