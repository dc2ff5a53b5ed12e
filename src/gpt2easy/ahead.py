"""Work done while the user types: load the model behind the interactive script's first prompt.

On a terminal, `interactive_conditional_samples.py` shows `Model prompt >>> ` at once and imports
TensorFlow, reads the weights and compiles generation in a background thread (`Ahead`) while the
prompt is typed: a plain launch needs 6-7 s for that on 2 cores (124M, XLA's programs cached), so a
prompt that takes as long to type is answered at once, where before the prompt itself appeared only
after those seconds.

While the thread works, file descriptor 2 (stderr: Python's logging, TensorFlow's C++ messages)
goes to a temporary file, replayed once the work is done or given up, without the lines `drop`
names (TensorFlow's import chatter): nothing is printed into the line being typed. The main thread's
own messages meanwhile go to `Ahead.stderr`, the terminal.

TensorFlow aborts the whole process ("FATAL: exception not rethrown", signal 6) when Python's
shutdown stops a thread inside its C++ code, so a command that ends while the work still runs
(Ctrl+D or Ctrl+C at the first prompt) must leave with `os._exit`: `cli.call` does so when
`busy()` is true, after flushing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_STARTED: list[threading.Thread] = []


def busy() -> bool:
    """Whether background work started here is still running."""
    return any(t.is_alive() for t in _STARTED)


class HeldStderr:
    """`with HeldStderr(drop):` file descriptor 2 goes to a temporary file, then comes back and
    what was written meanwhile is replayed without the lines that contain one of `drop`.
    `terminal` is a duplicate of the real stderr's descriptor while it is held."""

    def __init__(self, drop: tuple[str, ...] = ()):
        self._drop = drop

    def __enter__(self) -> HeldStderr:
        sys.stderr.flush()
        self.terminal = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self.terminal, 2)
        os.close(self.terminal)
        self._file.seek(0)
        lines = self._file.read().decode("utf-8", "replace").splitlines(keepends=True)
        self._file.close()
        sys.stderr.write("".join(x for x in lines if not any(d in x for d in self._drop)))
        sys.stderr.flush()


class Ahead(Generic[T]):
    """`with Ahead(work) as ahead:` runs `work()` in a daemon thread; `ahead.result()` waits for
    its value (or raises its exception). See the module docstring for stderr."""

    def __init__(self, work: Callable[[], T], drop: tuple[str, ...] = ()):
        self._work = work
        self._held = HeldStderr(drop)
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gpt2easy-ahead", daemon=True)

    def __enter__(self) -> Ahead[T]:
        self._held.__enter__()
        self.stderr = os.fdopen(os.dup(self._held.terminal), "w", buffering=1, encoding="utf-8",
                                errors="replace")  # fmt: skip
        _STARTED.append(self._thread)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as e:  # handed to the main thread by result()
            self._error = e

    def result(self) -> T:
        """The work's value, once it is done (Ctrl+C interrupts the wait)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def __exit__(self, *exc) -> None:
        """Give stderr back and replay what the work said meanwhile (also when it still runs)."""
        self.stderr.close()
        self._held.__exit__(*exc)
