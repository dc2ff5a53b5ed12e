"""One definition of each option: its type, default, help and accepted values.

Every command's options are the fields of one frozen dataclass (for example `TrainConfig`). A field
declared with `opt(...)` carries its one-line help and its limits in the field's metadata; the
field's annotation is its type. The command lines (the classic scripts and `gpt2easy SUBCOMMAND`)
and the Python API are derived from these dataclasses, so a flag is written down exactly once.

    @dataclasses.dataclass(frozen=True)
    class EvaluateConfig:
        data: str = opt(help="text file, folder, glob or .npz to score", positional=True)
        stride: int = opt(0, "window step; 0 = n_ctx (no overlap)", minimum=0)
        precision: str = opt("auto", "number format of the matmuls", choices=("auto", "fp32", "bf16"))

This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

MISSING = dataclasses.MISSING


def opt(default: Any = MISSING, help: str = "", *, choices: tuple | None = None,
        minimum: float | None = None, maximum: float | None = None,
        positional: bool = False, metavar: str | None = None) -> Any:  # fmt: skip
    """A dataclass field that is also a command-line option.

    `default` MISSING makes the option required; `choices` lists the accepted values; `minimum` and
    `maximum` bound numbers (inclusive); `positional` makes it a positional argument of the command
    line (it stays a keyword in Python).
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum,
            "maximum": maximum, "positional": positional, "metavar": metavar}  # fmt: skip
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def help_of(f: dataclasses.Field) -> str:
    """The one-line help of a field declared with `opt` ('' otherwise)."""
    return f.metadata.get("help", "")
