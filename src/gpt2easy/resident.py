"""The `--keep_warm` process: one launch's command at a time, with the launch's terminal relayed.

Started by `warm.relay` as `python -m gpt2easy.resident SOCKET` (see `warm` for the why and the
protocol: JSON lines, the launch's request, then `out`/`err`/`input`/`exit` from here and
`line`/`interrupt` from the launch). Each launch's command runs in the main thread through
`cli.call`, with stdin, stdout, stderr and logging standing for the launch's, from its working
directory; a reader thread turns the launch's Ctrl+C (or its end) into a KeyboardInterrupt there.
`sample.RESIDENT` keeps the last model loaded between launches.
"""

from __future__ import annotations

import _thread
import fcntl
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

from . import cli, sample, warm
from .warm import Channel

logger = logging.getLogger(__name__)



def serve(path: Path) -> None:
    """Listen on `path` and run one launch's command at a time, until a launch's `keep_warm`
    minutes pass without another. Exits at once if another process already serves `path`."""
    lock = open(warm.lock_path(path), "a")  # noqa: SIM115 (held for the process's life)
    for attempt in range(10):  # a launch's `_starting` holds it for an instant
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt == 9:
                return
            time.sleep(0.05)
    warm.INSIDE = True
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
                minutes = _session(conn, running)
            except Exception:  # a broken launch must not end the process
                logger.exception("launch failed")
            finally:
                busy.clear()
    finally:
        path.unlink(missing_ok=True)
        listener.close()
    logger.info("warm process %s: no launch for %g min, exiting", os.getpid(), minutes)


def _session(conn: socket.socket, running: threading.Event) -> float:
    """One launch: its command, run here with its terminal relayed. Returns its keep_warm minutes."""
    channel = Channel(conn)
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
        code = cli.exit_code(e.code)
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

    def __init__(self, channel: Channel, kind: str, closed: threading.Event, tty: bool):
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

    def __init__(self, channel: Channel, inbox: queue.Queue, closed: threading.Event, tty: bool):
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


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
