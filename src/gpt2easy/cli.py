"""Shared command-line plumbing for the top-level scripts (python-fire).

`run(fn)` sets up logging on stderr, lets fire parse the flags, and turns a `UserError` into one line
on stderr and exit code 2, Ctrl+C outside a training loop into exit code 130, with no traceback.
This module imports no TensorFlow, so scripts that don't need it start fast.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from .errors import UserError

_TF_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up chatter, with oneDNN kernels on.

    oneDNN is off by default on CPUs without AVX-512 (such as AMD Zen 2), yet it makes our training
    step about 1.3x faster there (bench/train.py), so we turn it on unless the user chose. TensorFlow
    then logs two lines at import, before any log level applies: we capture file descriptor 2 during
    the import and replay every other line.
    """
    # Level 3: TensorFlow's C++ errors are also its own chatter here (the XLA cache logs a harmless
    # parse error on every load); real failures still reach Python as exceptions with their message.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" in sys.modules:
        return
    from . import compile_cache

    compile_cache.enable()
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)  # replay what was said, also when the import failed
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(x for x in lines if not any(n in x for n in _TF_NOISE)))
            sys.stderr.flush()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def run(fn: Callable, argv: list[str] | None = None) -> None:
    """Run `fn` as a fire command line and exit with a code that scripts and shells can trust."""
    import fire

    setup_logging(verbose="--verbose" in (argv if argv is not None else sys.argv))
    prog = os.path.basename(sys.argv[0]) or fn.__name__
    try:
        fire.Fire(fn, command=argv, name=prog)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error for the user.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
