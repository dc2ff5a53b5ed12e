"""One definition of each option: its type, default, help and accepted values.

Every command's options are the fields of one frozen dataclass (for example `TrainConfig`). A field
declared with `opt(...)` carries its one-line help and its limits in the field's metadata; the
field's annotation is its type. The command lines (the classic scripts and `gpt2easy SUBCOMMAND`,
see `flagparse`) and the Python API are derived from these dataclasses, so a flag is written down
exactly once, and `check_config` checks any config, however it was made, against the same limits.

    @dataclasses.dataclass(frozen=True)
    class EvaluateConfig:
        data: str = opt(help="text file, folder, glob or .npz to score", positional=True)
        stride: int = opt(0, "window step; 0 = n_ctx (no overlap)", minimum=0)
        precision: str = opt("auto", "number format of the matmuls", choices=("auto", "fp32", "bf16"))

This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from .errors import UserError

MISSING = dataclasses.MISSING


def opt(default: Any = MISSING, help: str = "", *, choices: tuple | None = None,
        minimum: float | None = None, maximum: float | None = None, above: float | None = None,
        below: float | None = None, none_as: int | None = None, positional: bool = False,
        metavar: str | None = None) -> Any:  # fmt: skip
    """A dataclass field that is also a command-line option.

    `default` MISSING makes the option required; `choices` lists the accepted values; `minimum` and
    `maximum` bound numbers (inclusive), `above` and `below` (exclusive); `none_as` is the number
    that means None on a command line (the classic `--steps -1`); `positional` makes it a
    positional argument of the command line (it stays a keyword in Python, and `--name` works too).
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum,
            "maximum": maximum, "above": above, "below": below, "none_as": none_as,
            "positional": positional, "metavar": metavar}  # fmt: skip
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def help_of(f: dataclasses.Field) -> str:
    """The one-line help of a field declared with `opt` ('' otherwise)."""
    return f.metadata.get("help", "")


@dataclasses.dataclass(frozen=True)
class Option:
    """One field of a config as the command line sees it."""

    name: str
    kind: type  # str, int, float, bool or tuple (a tuple of strings)
    optional: bool  # None is allowed
    default: Any  # MISSING: required
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    none_as: int | None = None
    positional: bool = False
    metavar: str | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def accepted(self) -> str:
        """What the option accepts, in words: 'a whole number at least 1', 'fp32 or bf16', ..."""
        if self.choices:
            return _either(self.choices)
        if self.kind is bool and self.optional:
            return "True, False or auto"
        what = {int: "a whole number", float: "a number", bool: "True or False",
                tuple: "a string or a list like '[\"a\", \"b\"]'"}.get(self.kind, "text")
        bounds = self.bounds()
        if bounds:
            what += " " + bounds
        if self.none_as is not None:
            what += f" (or {self.none_as} for the default)"
        return what

    def bounds(self) -> str:
        low = (f"at least {_num(self.minimum)}" if self.minimum is not None
               else f"> {_num(self.above)}" if self.above is not None else "")
        high = (f"at most {_num(self.maximum)}" if self.maximum is not None
                else f"< {_num(self.below)}" if self.below is not None else "")
        if self.minimum is not None and self.maximum is not None:
            return f"between {_num(self.minimum)} and {_num(self.maximum)}"
        return " and ".join(x for x in (low, high) if x)


def _num(x: float) -> str:
    return f"{x:g}"


def _either(choices: tuple) -> str:
    words = [str(c) for c in choices]
    return " or ".join(words) if len(words) <= 2 else f"one of {', '.join(words)}"


def options_of(cls: type) -> list[Option]:
    """The options of a config dataclass, in field order (types from the annotations)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, optional = _kind(hints[f.name], f"{cls.__name__}.{f.name}")
        default = f.default
        if f.default_factory is not MISSING:
            default = f.default_factory()
        meta = {k: f.metadata.get(k) for k in ("help", "choices", "minimum", "maximum", "above",
                                                 "below", "none_as", "positional", "metavar")}
        meta["help"] = meta["help"] or ""
        meta["positional"] = bool(meta["positional"])
        out.append(Option(f.name, kind, optional, default, **meta))
    return out


def _kind(hint: Any, where: str) -> tuple[type, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{where}: unsupported option type {hint}")
        hint = rest[0]
    if typing.get_origin(hint) is tuple:
        return tuple, optional
    if hint in (str, int, float, bool):
        return hint, optional
    raise TypeError(f"{where}: unsupported option type {hint}")


def check_value(o: Option, value: Any) -> None:
    """A one-line UserError when `value` is outside what option `o` accepts (None passes where
    the option allows it)."""
    if value is None:
        if o.optional:
            return
        raise UserError(f"--{o.name} must be {o.accepted()}, got None")
    if o.choices and value not in o.choices:
        raise UserError(f"--{o.name} must be {o.accepted()}, got {value!r}")
    if o.kind in (int, float):
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (o.kind is int and value != int(value))):
            raise UserError(f"--{o.name} must be {o.accepted()}, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"--{o.name} must be a finite number, got {value!r}")
        low_ok = ((o.minimum is None or value >= o.minimum) and (o.above is None or value > o.above))
        high_ok = ((o.maximum is None or value <= o.maximum) and (o.below is None or value < o.below))
        if not (low_ok and high_ok):
            raise UserError(f"--{o.name} must be {o.bounds()}, got {_num(value)}"
                            + (f" ({o.none_as} for the default)" if o.none_as is not None else ""))


def check_config(cfg: Any) -> None:
    """Check every field of a config against its option's type, bounds and choices."""
    for o in options_of(type(cfg)):
        check_value(o, getattr(cfg, o.name))
