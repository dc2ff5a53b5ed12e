"""The command lines: the `gpt2easy` command, its subcommands, and the classic top-level scripts.

A command is a config dataclass (its fields are the flags, see `options` and `flagparse`) and one
function that takes the config. `COMMANDS` maps each subcommand to both, as "module:name" strings
imported only when that subcommand runs, so `gpt2easy --help` and a mistyped flag never wait for
TensorFlow. Another command joins with one line:

    register("evaluate", "gpt2easy.commands:EvaluateConfig", "gpt2easy.evaluate:main", "held-out loss")

`main()` is the installed `gpt2easy` command; `script(name)` runs one command as a classic script
(`train.py`). Both parse every flag first, then set up logging on stderr, turn a `UserError` into
one line `PROG: error: ...` and exit code 2, Ctrl+C outside a training loop into exit code 130.
This module imports no TensorFlow, so commands that don't need it start fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gc
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import sys
import threading
import typing
from collections.abc import Callable
from typing import Any

from .errors import UserError

TF_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on")


@dataclasses.dataclass(frozen=True)
class Command:
    config: str  # "module:ConfigClass"
    function: str  # "module:function", called with the config
    help: str  # one line for `gpt2easy --help`


COMMANDS: dict[str, Command] = {}
PROG = "gpt2easy"  # the running command's name in messages (`train.py`, `gpt2easy train`)


def register(name: str, config: str, function: str, help: str) -> None:
    """Add subcommand `name` to the `gpt2easy` command."""
    COMMANDS[name] = Command(config, function, help)


register("download", "gpt2easy.commands:DownloadConfig", "gpt2easy.commands:download",
         "download one of OpenAI's GPT-2 models (download_model.py)")
register("encode", "gpt2easy.commands:EncodeConfig", "gpt2easy.commands:encode",
         "pre-encode text into a token archive (encode.py)")
register("train", "gpt2easy.train_config:TrainConfig", "gpt2easy.commands:train",
         "fine-tune GPT-2, or train a small one from scratch (train.py)")
register("sample", "gpt2easy.sample_commands:SampleConfig", "gpt2easy.sample_commands:sample",
         "continue prompts, interactively or from a pipe (interactive_conditional_samples.py)")
register("generate", "gpt2easy.sample_commands:GenerateConfig",
         "gpt2easy.sample_commands:generate",
         "generate samples from nothing (generate_unconditional_samples.py)")
register("evaluate", "gpt2easy.commands:EvaluateConfig", "gpt2easy.evaluate:main",
         "loss, perplexity and bits per byte of a model on a corpus (evaluate.py)")
register("export", "gpt2easy.commands:ExportConfig", "gpt2easy.commands:export",
         "write a model as a Hugging Face folder or in OpenAI's layout (export.py)")
register("serve", "gpt2easy.serve:ServeConfig", "gpt2easy.serve:main",
         "a web page and OpenAI's completions API for a model (serve.py)")


def load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    """The `gpt2easy` command: `gpt2easy SUBCOMMAND [flags]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--help", "-h", "help"):
        out = sys.stdout if argv else sys.stderr
        width = max(len(n) for n in COMMANDS) + 2
        print("usage: gpt2easy COMMAND [flags]   (gpt2easy COMMAND --help: its flags)\n", file=out)
        for name, c in COMMANDS.items():
            print(f"  {name.ljust(width)}{c.help}", file=out)
        sys.exit(0 if argv else 2)
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(COMMANDS)}"
        _fail("gpt2easy", f"unknown command {name!r} ({hint})")
    run_command(name, argv[1:], f"gpt2easy {name}")


def script(name: str, argv: list[str] | None = None) -> None:
    """Run subcommand `name` as a classic top-level script (its name in messages: `train.py`)."""
    prog = os.path.basename(sys.argv[0]) or name
    run_command(name, list(sys.argv[1:] if argv is None else argv), prog)


def run_command(name: str, argv: list[str], prog: str) -> None:
    c = COMMANDS[name]
    # The function's module is imported only once the flags are good (it may import more).
    execute(load(c.config), lambda cfg: load(c.function)(cfg), argv, prog, _about(load(c.config)))


def run(fn: Callable, argv: list[str] | None = None) -> None:
    """Run a plain function as a command line: its parameters are the flags (also positional, in
    order), their types the annotations, their help the docstring's `Args:`."""
    prog = os.path.basename(sys.argv[0]) or fn.__name__
    config = config_of_function(fn)

    def call(cfg):
        return fn(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})

    execute(config, call, list(sys.argv[1:] if argv is None else argv), prog, _about(fn))


def execute(config: type, function: Callable, argv: list[str], prog: str, about: str = "") -> None:
    """Parse `argv` into `config`, then call `function(cfg)`, with the exit codes of the module
    docstring."""
    from .flagparse import Help, parse

    global PROG
    PROG = prog
    try:
        cfg, verbose = parse(config, argv, prog, about)
    except Help as h:
        sys.stdout.write(str(h))
        sys.exit(0)
    except UserError as e:
        _fail(prog, str(e))
    setup_logging(verbose)
    call(function, cfg, prog)


def call(function: Callable, cfg: Any, prog: str) -> None:
    """`function(cfg)` with the exit codes of the module docstring (also what a `--keep_warm`
    process runs for a launch, see `warm`)."""
    try:
        _call(function, cfg, prog)
    except SystemExit as e:
        _now_if_busy(e.code)
        raise
    _now_if_busy(0)


def _now_if_busy(code) -> None:
    """Exit at once, skipping Python's shutdown, while a model still loads in the background
    (`ahead`: TensorFlow aborts the process if its threads are stopped mid-call)."""
    from . import ahead

    if ahead.busy():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code(code))


def exit_code(code: Any) -> int:
    """The process exit code of `SystemExit(code)`: None is 0, a message is 1."""
    return code if isinstance(code, int) else 0 if code is None else 1


_SIGINT_SEEN: list[bool] = []  # Ctrl+C arrived during a command (see _call)


def _note_sigint(signum, frame) -> None:
    """Python's own Ctrl+C handling (KeyboardInterrupt), remembering that it happened."""
    _SIGINT_SEEN.append(True)
    raise KeyboardInterrupt


def _call(function: Callable, cfg: Any, prog: str) -> None:
    # Ctrl+C raises KeyboardInterrupt wherever Python is; inside TensorFlow's C++ code (converting
    # a NumPy array, say) that code turned it into a TypeError/SystemError with a traceback. So
    # the arrival is noted and any error after it is the interrupt (exit 130, one line).
    watch = (threading.current_thread() is threading.main_thread()
             and signal.getsignal(signal.SIGINT) is signal.default_int_handler)  # fmt: skip
    if watch:
        signal.signal(signal.SIGINT, _note_sigint)
    try:
        function(resolve_folders(cfg))
    except UserError as e:
        _fail(prog, str(e))
    except KeyboardInterrupt:
        _interrupted(prog)
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error for the user.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception:
        if _SIGINT_SEEN:
            _interrupted(prog)
        raise
    finally:
        if watch:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted(prog: str) -> typing.NoReturn:
    print(f"{prog}: interrupted", file=sys.stderr)
    sys.exit(130)


def _fail(prog: str, message: str) -> typing.NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _about(fn: Callable) -> str:
    """The first line of a function's docstring (the one line of `--help` under the usage)."""
    return (inspect.getdoc(fn) or "").split("\n", 1)[0]


def resolve_folders(cfg: Any) -> Any:
    """The config with `models_dir` None (not given) replaced by the folder `folders` picks."""
    if getattr(cfg, "models_dir", "") is None:
        from .folders import resolve_models_dir

        cfg = dataclasses.replace(cfg, models_dir=str(resolve_models_dir(None)))
    return cfg


def config_of_function(fn: Callable) -> type:
    """A frozen dataclass whose fields are `fn`'s parameters (for `run`)."""
    from .options import opt

    hints = typing.get_type_hints(fn)
    helps = _docstring_args(inspect.getdoc(fn) or "")
    fields = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == "verbose" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue  # --verbose is every command's (it sets the log level)
        default = dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
        # Without an annotation, the type of the default (as python-fire guessed it), else text.
        guess = type(default) if type(default) in (str, int, float, bool) else str | None
        hint = hints.get(p.name, guess)
        if default is None and type(None) not in typing.get_args(hint):
            hint = hint | None
        # As python-fire did: every parameter may also be given by position.
        fields.append((p.name, hint, opt(default, helps.get(p.name, ""), positional=True)))
    return dataclasses.make_dataclass(f"{fn.__name__}_flags", fields, frozen=True, kw_only=True)


def _docstring_args(doc: str) -> dict[str, str]:
    """`name: help` entries of a Google-style `Args:` section, joined onto one line each."""
    helps: dict[str, str] = {}
    current = None
    in_args = False
    for line in doc.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):
            break
        head, sep, rest = line.strip().partition(": ")
        if sep and line.startswith("    ") and not line.startswith("     ") and head.isidentifier():
            current = head
            helps[current] = rest.strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return helps


def quiet_tensorflow(capture: bool = True, freeze: bool = True) -> None:
    """Import TensorFlow without its C++ start-up chatter, with oneDNN kernels on, fast.

    oneDNN is off by default on CPUs without AVX-512 (such as AMD Zen 2), yet it makes our training
    step about 1.3x faster there (bench/train.py), so we turn it on unless the user chose. TensorFlow
    then logs two lines at import, before any log level applies: we capture file descriptor 2 during
    the import and replay every other line (`capture=False`: the caller holds file descriptor 2
    already, see `ahead`). Without TensorFlow installed: a UserError naming the extra to install.

    Python's cyclic garbage collector is off during the import, and with `freeze` every object
    alive after it is moved out of the collector's sight (`gc.freeze`; the modules live as long as
    the process anyway): the import makes millions of objects, each growth of the heap by a quarter
    set off a full collection over all of them, and later collections (tracing the compiled
    functions makes many objects) kept walking TensorFlow's. Measured on 2 cores (2026-12-04): 18%
    of `import tensorflow` was collection; a second launch of the interactive script to its first
    token about 0.5-1 s sooner. `freeze=False` (the Python API, inside a user's process, whose own
    objects must stay collectable) only pauses the collector during the import. Commands also
    import TensorFlow without Keras (`lean_import`; the Python API leaves a user's Keras alone).
    """
    # Level 3: TensorFlow's C++ errors are also its own chatter here (the XLA cache logs a harmless
    # parse error on every load); real failures still reach Python as exceptions with their message.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" in sys.modules:
        return
    from . import compile_cache

    require_tensorflow()
    compile_cache.enable()
    from . import lean_import
    from .ahead import HeldStderr

    collecting = gc.isenabled()
    gc.disable()
    try:
        with (HeldStderr(TF_NOISE) if capture else contextlib.nullcontext(),
              lean_import.without("keras", "tf_keras") if freeze else contextlib.nullcontext()):
            import tensorflow  # noqa: F401
    finally:
        if freeze:
            gc.freeze()
        if collecting:
            gc.enable()


def require_tensorflow() -> None:
    """A UserError naming the extra to install when TensorFlow is not installed (checked without
    importing it)."""
    if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is None:
        raise UserError("TensorFlow is not installed: pip install 'gpt2easy[cpu]' (or 'gpt2easy[gpu]' "
                        "on a machine with an NVIDIA GPU)")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
