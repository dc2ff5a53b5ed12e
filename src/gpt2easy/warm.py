"""`--keep_warm MINUTES`: a model kept loaded in a background process, so a later launch starts at once.

A launch of the sampling scripts pays, every time, for TensorFlow's import (2.5-3.5 s here), reading
the weights, tracing the compiled functions and loading XLA's cached programs: 6.5-8 s for 124M
before the first token, even with everything cached on disk (0.2-0.3 s when served warm, measured
by `bench/startup.py`). Only a process that stays alive avoids
that. With `--keep_warm M` the script (`relay`, which imports no TensorFlow) hands its flags to
such a process and relays its terminal to it: the process's output comes back as it is written,
the script's input lines go to it, Ctrl+C interrupts it as it interrupts the script. The command
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

import _thread
import dataclasses
import hashlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
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
    channel = _Channel(conn)
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


def _follow(channel: _Channel, path: Path) -> int:
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
        child = subprocess.Popen([sys.executable, "-m", "gpt2easy.warm", str(path)], env=env,
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


def _starting(path: Path) -> bool:
    """Whether a resident process holds `path`'s lock (one started by another launch may still be
    importing TensorFlow)."""
    import fcntl

    with open(path.with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


class _Channel:
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


# --- the resident process ---------------------------------------------------------------------


def serve(path: Path) -> None:
    """Listen on `path` and run one launch's command at a time, until a launch's `keep_warm`
    minutes pass without another. Exits at once if another process already serves `path`."""
    import fcntl

    lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (held for the process's life)
    for attempt in range(10):  # a launch's `_starting` holds it for an instant
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt == 9:
                return
            time.sleep(0.05)
    global INSIDE
    INSIDE = True
    from . import cli, sample

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cli.quiet_tensorflow()
    sample.RESIDENT = {}
    running = threading.Event()  # a launch's command is running: Ctrl+C from it interrupts it

    def on_sigint(signum, frame):  # only the reader thread's interrupt_main sends it
        if running.is_set():
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)

    def on_sigterm(signum, frame):  # `kill`: remove the socket, end now (even mid-launch)
        path.unlink(missing_ok=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(8)
    pending: queue.Queue = queue.Queue()
    busy = threading.Event()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if busy.is_set():
                conn.close()  # the launch runs its command itself
            else:
                busy.set()
                pending.put(conn)

    threading.Thread(target=accept, daemon=True).start()
    minutes = 1.0
    logger.info("warm process %s listening on %s", os.getpid(), path)
    try:
        while True:
            try:
                conn = pending.get(timeout=minutes * 60)
            except queue.Empty:
                break
            try:
                minutes = _session(conn, cli, running)
            except Exception:  # a broken launch must not end the process
                logger.exception("launch failed")
            finally:
                busy.clear()
    finally:
        path.unlink(missing_ok=True)
        listener.close()
    logger.info("warm process %s: no launch for %g min, exiting", os.getpid(), minutes)


def _session(conn: socket.socket, cli, running: threading.Event) -> float:
    """One launch: its command, run here with its terminal relayed. Returns its keep_warm minutes."""
    channel = _Channel(conn)
    request = channel.receive()
    if not request:
        channel.close()
        return 1.0
    command = cli.COMMANDS[request["command"]]
    config = cli.load(command.config)
    cfg = config(**request["config"])
    inbox: queue.Queue = queue.Queue()
    closed = threading.Event()

    def read() -> None:  # the launch's messages: input lines, Ctrl+C, or its end
        while True:
            try:
                message = channel.receive()
            except (OSError, ValueError):
                message = None
            if message is None:
                closed.set()
                inbox.put({"line": ""})
            if message is None or "interrupt" in message:
                if running.is_set():
                    _thread.interrupt_main(signal.SIGINT)
                if message is None:
                    return
            else:
                inbox.put(message)

    channel.send({"hello": os.getpid()})
    threading.Thread(target=read, daemon=True).start()
    streams = sys.stdin, sys.stdout, sys.stderr
    home = os.getcwd()
    sys.stdin = _Input(channel, inbox, closed, request["tty"][0])
    sys.stdout = _Output(channel, "out", closed, request["tty"][1])
    sys.stderr = _Output(channel, "err", closed, False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if request["verbose"] else logging.INFO)
    code = 0
    try:
        os.chdir(request["cwd"])
        running.set()
        cli.call(lambda c: cli.load(command.function)(c), cfg, request["prog"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:  # after the command's own handling
        code = 130
    except Exception:  # a crash: its traceback goes where the script would have shown it
        sys.stderr.write(traceback.format_exc())
        code = 1
    finally:
        running.clear()
        os.chdir(home)
        sys.stdin, sys.stdout, sys.stderr = streams
        root.handlers, root.level = handlers, level
    if not closed.is_set():
        try:
            channel.send({"exit": code})
        except OSError:
            pass
    channel.close()
    return float(request.get("minutes") or 1.0)


class _Output:
    """A text stream whose writes go to the launch (dropped once it is gone)."""

    def __init__(self, channel: _Channel, kind: str, closed: threading.Event, tty: bool):
        self.channel, self.kind, self.closed, self.tty = channel, kind, closed, tty
        self.encoding, self.errors = "utf-8", "strict"

    def write(self, text: str) -> int:
        if text and not self.closed.is_set():
            try:
                self.channel.send({self.kind: text})
            except OSError:
                self.closed.set()
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty

    def writable(self) -> bool:
        return True


class _Input:
    """The launch's standard input: each line asked for when read."""

    def __init__(self, channel: _Channel, inbox: queue.Queue, closed: threading.Event, tty: bool):
        self.channel, self.inbox, self.closed, self.tty = channel, inbox, closed, tty
        self.encoding, self.errors = "utf-8", "strict"

    def readline(self, size: int = -1) -> str:
        if self.closed.is_set():
            return ""
        self.channel.send({"input": True})
        while True:  # polled, so that Ctrl+C (interrupt_main) is seen while waiting
            try:
                return self.inbox.get(timeout=0.1).get("line", "")
            except queue.Empty:
                continue

    def isatty(self) -> bool:
        return self.tty

    def readable(self) -> bool:
        return True


if __name__ == "__main__":  # `python -m gpt2easy.warm SOCKET`, as `_start` runs it
    from gpt2easy import warm  # this package's module, whose INSIDE the commands read

    warm.serve(Path(sys.argv[1]))
