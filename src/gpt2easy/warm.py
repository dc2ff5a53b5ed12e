"""`--keep_warm MINUTES`: a model kept loaded in a background process, so a later launch starts at once.

A launch of the sampling scripts pays, every time, for TensorFlow's import (2.5-3.5 s here), reading
the weights, tracing the compiled functions and loading XLA's cached programs: 6.5-8 s for 124M
before the first token, even with everything cached on disk (0.2-0.3 s when served warm, measured
by `bench/startup.py`). Only a process that stays alive avoids that. With `--keep_warm M` the
script (`relay`, which imports no TensorFlow) hands its flags to such a process (`resident`) and
relays its terminal to it: the process's output comes back as it is written, the script's input
lines go to it, Ctrl+C interrupts it as it interrupts the script. The command
runs there exactly as it would here (the same functions, from the script's working directory, with
its `prog` in messages and its exit code), so a seed gives the same text either way; the last
model loaded stays loaded (`sample.RESIDENT`) until its checkpoint files change.

The process is started on the first launch (which takes as long as a launch without the flag) and
exits after M minutes without a launch. One process per user, Python, gpt2easy source and
environment (`TF_*`, `GPT2EASY_*`, `CUDA_*`, ... variables): it listens on a Unix socket readable by
its user only, `cache_root()/warm/KEY.sock`, and logs to `KEY.log` beside it. It serves one launch
at a time; a launch that finds it busy (or cannot reach it) runs the command itself as usual.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .compile_cache import cache_root
from .errors import UserError

logger = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent
START_TIMEOUT = 300.0  # seconds a first launch waits for the new process to listen
_ENV_PREFIXES = ("TF_", "GPT2EASY_", "CUDA_", "XLA_", "OMP_", "KMP_", "ONEDNN_", "DNNL_", "PYTHON")
INSIDE = False  # True in the resident process: its commands run, they don't relay


def _key() -> str:
    """What a resident process must share with a launch to serve it: user, Python, this package's
    source (path and newest change) and the environment variables TensorFlow and we read."""
    newest = max(p.stat().st_mtime_ns for p in PACKAGE.rglob("*.py"))
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    parts = [str(os.getuid()), sys.executable, str(PACKAGE), str(newest), json.dumps(env)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def socket_path() -> Path:
    """This launch's socket: under the cache folder, or a private temporary folder when that path
    is too long for a Unix socket (about 100 bytes)."""
    folder = cache_root() / "warm"
    if len(str(folder)) > 80:
        folder = Path(tempfile.gettempdir()) / f"gpt2easy-warm-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"{_key()}.sock"


# --- the launch's side ------------------------------------------------------------------------


def relay(command: str, cfg, prog: str) -> int | None:
    """Run `command` with `cfg` in the resident process (started if there is none), relaying this
    terminal; its exit code, or None when no resident process could take it (run it here)."""
    if not hasattr(socket, "AF_UNIX"):
        raise UserError("--keep_warm needs Unix sockets (Linux, macOS); run without it")
    path = socket_path()
    conn = _connect(path)
    if conn is None:
        conn = _start(path)
    if conn is None:
        return None
    channel = Channel(conn)
    request = {"command": command, "config": dataclasses.asdict(cfg), "prog": prog,
               "cwd": os.getcwd(), "tty": [sys.stdin.isatty(), sys.stdout.isatty()],
               "verbose": logging.getLogger().getEffectiveLevel() <= logging.DEBUG,
               "minutes": cfg.keep_warm}  # fmt: skip
    try:
        channel.send(request)
        hello = channel.receive()
    except OSError:
        hello = None
    if not hello or "hello" not in hello:
        conn.close()
        logger.info("the warm model is busy with another launch (or ending): loading it here")
        return None
    logger.debug("using the warm model (process %s)", hello["hello"])
    return _follow(channel, path)


class _Abandon(Exception):
    """A second Ctrl+C: stop waiting for the warm process."""


def _follow(channel: Channel, path: Path) -> int:
    """Relay messages until the resident process reports the command's exit code. Ctrl+C is
    passed on (the command stops as it would here); a second one stops waiting (exit code 130)."""
    state = {"sent": False, "reading": False}

    def on_sigint(signum, frame):
        if state["sent"]:
            raise _Abandon
        state["sent"] = True
        channel.send({"interrupt": True})
        if state["reading"]:
            raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        while True:
            message = channel.receive()
            if message is None:
                raise UserError(f"the warm process ended unexpectedly (its log: "
                                f"{path.with_suffix('.log')}); run again without --keep_warm")
            if "out" in message:
                sys.stdout.write(message["out"])
                sys.stdout.flush()
            elif "err" in message:
                sys.stderr.write(message["err"])
                sys.stderr.flush()
            elif "input" in message:
                state["reading"] = True
                try:
                    line = _read_line()
                except KeyboardInterrupt:
                    line = ""
                finally:
                    state["reading"] = False
                channel.send({"line": line})
            elif "exit" in message:
                return int(message["exit"])
    except _Abandon:
        return 130
    except BrokenPipeError:  # our stdout closed (`| head`): the command stops with the connection
        channel.close()
        raise
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def _read_line() -> str:
    """One line of this launch's input ("" at its end), with line editing on a terminal."""
    if sys.stdin.isatty():
        try:
            return input() + "\n"
        except EOFError:
            return ""
    return sys.stdin.readline()


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _start(path: Path) -> socket.socket | None:
    """Start a resident process for `path` and connect to it once it listens (None if it died)."""
    log = path.with_suffix(".log")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent),
                                                       *filter(None, [os.environ.get("PYTHONPATH")])]))
    if log.exists() and log.stat().st_size > 1 << 20:
        log.unlink()
    with open(log, "ab") as out:  # appended: a process that lost a race to start must not erase it
        child = subprocess.Popen([sys.executable, "-m", "gpt2easy.resident", str(path)], env=env,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=str(path.parent))  # fmt: skip
    logger.debug("started a warm process (%s), log %s", child.pid, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if child.poll() is not None and not _starting(path):  # it failed, none other is starting
            conn = _connect(path)
            if conn is None:
                logger.warning("warning: the warm process did not start (see %s); running here", log)
            return conn
        time.sleep(0.05)
    return None


def stop_all(root: Path | None = None) -> None:
    """End the resident processes whose logs are under `root/warm` (default: `cache_root()`), as
    `kill` would: for tests and benchmarks that started some with a cache folder of their own. Only
    live processes running `gpt2easy.resident` are signalled (a logged pid may have been reused)."""
    import re

    for log in ((root or cache_root()) / "warm").glob("*.log"):
        for pid in map(int, re.findall(r"warm process (\d+) listening", log.read_text("utf-8"))):
            try:
                if b"gpt2easy.resident" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
            except OSError:  # gone (or no /proc: nothing to check against, nothing signalled)
                pass


def lock_path(path: Path) -> Path:
    """The lock the resident process for `path` holds while it lives."""
    return path.with_suffix(".lock")


def _starting(path: Path) -> bool:
    """Whether a resident process holds `path`'s lock (one started by another launch may still be
    importing TensorFlow)."""
    import fcntl

    with open(lock_path(path), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


class Channel:
    """JSON messages, one per line, over a connected socket."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.file = conn.makefile("rb")
        self.lock = threading.Lock()

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self.lock:
            self.conn.sendall(data)

    def receive(self) -> dict | None:
        line = self.file.readline()
        return json.loads(line) if line else None

    def close(self) -> None:
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
