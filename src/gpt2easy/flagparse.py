"""The command line of a config dataclass: `--flag value` in, a checked config out, or one line.

`parse(Config, argv, prog)` reads the flags that `options_of(Config)` derives from the dataclass
(name, type, default, help, bounds, choices) plus `--verbose`, and returns the config, the verbose
setting, or raises `Help` (the text for stdout) or a one-line `UserError`, before any work:

- `--flag value` and `--flag=value`; booleans as `--flag`, `--flag=False`, `--flag False`,
  `--noflag`, and an optional boolean (`bool | None`) also as `--flag auto` (None: decided at run
  time); a field with `none_as` takes that number for None (`--steps -1`);
- an unknown flag names the closest known one (`unknown flag --learning_rat (did you mean
  --learning_rate?)`); a value of the wrong type, out of range, not among the choices, empty, or a
  flag given twice gets one line naming the flag, the value and what is accepted.

argparse (with `allow_abbrev=False`) splits the command line; it never prints: its errors become
UserErrors, and conversion, checks and help are ours, so every message has the same form.
This module imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
from typing import Any

from .errors import UserError
from .options import MISSING, Option, check_value, options_of

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")
AUTO = ("auto",)  # an optional boolean's None
_UNSET = object()
_NUMBER = re.compile(r"^-\.?\d")
VERBOSE = Option("verbose", bool, False, False, "debug logging")


class Help(Exception):  # noqa: N818 - not an error: `--help` was asked for
    """`--help` was given; the exception's text is the help."""


class _Once(argparse.Action):
    """Store the text of a flag; a second occurrence is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not _UNSET:
            raise UserError(f"--{self.dest} given twice ({getattr(namespace, self.dest)!r} and "
                            f"{values!r}); give it once")
        setattr(namespace, self.dest, values)


class _Splitter(argparse.ArgumentParser):
    def error(self, message: str):
        m = re.match(r"argument --(\w+): expected one argument", message)
        if m:
            raise UserError(f"--{m.group(1)} needs a value (--{m.group(1)} VALUE or "
                            f"--{m.group(1)}=VALUE)")
        raise UserError(message)


def all_options(cls: type) -> list[Option]:
    """The config's options and `--verbose`, which every command has."""
    options = options_of(cls)
    return options if any(o.name == "verbose" for o in options) else [*options, VERBOSE]


def parse(cls: type, argv: list[str], prog: str, about: str = "") -> tuple[Any, bool]:
    """The config that `argv` asks for and whether --verbose was given (see the module docstring)."""
    options = all_options(cls)
    by_name = {o.name: o for o in options}
    if any(a in ("--help", "-h") for a in _before_double_dash(argv)):
        raise Help(help_text(cls, prog, about))
    splitter = _Splitter(prog=prog, add_help=False, allow_abbrev=False)
    for o in options:
        splitter.add_argument(f"--{o.name}", dest=o.name, default=_UNSET, action=_Once)
    ns, extras = splitter.parse_known_args(_normalise_booleans(argv, by_name))
    texts = {o.name: getattr(ns, o.name) for o in options}
    loose = _loose_arguments(extras, by_name)

    positional = [o for o in options if o.positional]
    for o in positional:
        if not loose:
            break
        if texts[o.name] is _UNSET:
            texts[o.name] = loose.pop(0)
    if loose:
        raise UserError(f"unexpected argument {loose[0]!r}" + (
            f" ({prog} takes {' '.join(o.name.upper() for o in positional)} only)" if positional
            else f" ({prog} takes flags only: --name value)"))
    values: dict[str, Any] = {}
    for o in options:
        text = texts[o.name]
        if text is _UNSET:
            if o.required:
                raise UserError(f"missing {o.name.upper() if o.positional else '--' + o.name}: "
                                f"{o.help or o.accepted()}")
            continue
        values[o.name] = convert(o, text)
    verbose = bool(values.pop("verbose", False))
    return cls(**values), verbose


def _before_double_dash(argv: list[str]) -> list[str]:
    return argv[: argv.index("--")] if "--" in argv else argv


def _normalise_booleans(argv: list[str], by_name: dict[str, Option]) -> list[str]:
    """`--flag`, `--flag False`, `--noflag` of boolean options as `--flag=VALUE`."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out += argv[i - 1:]
            break
        if not token.startswith("--") or "=" in token:
            out.append(token)
            continue
        name = token[2:]
        o = by_name.get(name)
        if o is not None and o.kind is bool:
            value = "true"
            if i < len(argv) and argv[i].lower() in TRUE + FALSE + (AUTO if o.optional else ()):
                value, i = argv[i], i + 1
            out.append(f"--{name}={value}")
        elif o is None and name.startswith("no") and name[2:] in by_name and by_name[name[2:]].kind is bool:
            out.append(f"--{name[2:]}=false")
        else:
            out.append(token)
    return out


def _loose_arguments(extras: list[str], by_name: dict[str, Option]) -> list[str]:
    """The positional arguments among argparse's leftovers; an unknown flag is an error."""
    loose, after_dash = [], False
    for token in extras:
        if token == "--" and not after_dash:
            after_dash = True
        elif not after_dash and token.startswith("-") and token != "-" and not _NUMBER.match(token):
            raise UserError(unknown_flag(token, by_name))
        else:
            loose.append(token)
    return loose


def unknown_flag(token: str, by_name: dict[str, Option]) -> str:
    name = token.lstrip("-").split("=", 1)[0]
    spellings = {n: n for n in by_name}
    spellings.update({f"no{n}": f"no{n}" for n, o in by_name.items() if o.kind is bool})
    spellings.update({n.replace("_", "-"): n for n in by_name})
    close = difflib.get_close_matches(name, list(spellings), n=1, cutoff=0.6)
    hint = f"did you mean --{spellings[close[0]]}?" if close else "see --help"
    return f"unknown flag {token.split('=', 1)[0]} ({hint})"


def convert(o: Option, text: str) -> Any:
    """The value of option `o` written as `text` on a command line, checked."""
    if text == "":
        raise UserError(f"--{o.name} got an empty value; it takes {o.accepted()}")
    if o.kind is bool:
        if o.optional and text.lower() in AUTO:
            return None
        if text.lower() not in TRUE + FALSE:
            raise UserError(f"--{o.name} must be {o.accepted()}, got {text!r}")
        return text.lower() in TRUE
    if o.kind is int:
        try:
            value: Any = int(text)
        except ValueError:
            raise UserError(f"--{o.name} must be {o.accepted()}, got {text!r}") from None
        if o.none_as is not None and value == o.none_as:
            return None
    elif o.kind is float:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--{o.name} must be {o.accepted()}, got {text!r}") from None
    elif o.kind is tuple:
        value = _strings(o, text)
    else:
        value = text
    check_value(o, value)
    return value


def _strings(o: Option, text: str) -> tuple[str, ...]:
    """A string, or a Python/JSON list of strings (as python-fire read it)."""
    if not text.lstrip().startswith(("[", "(")):
        return (text,)
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        items = None
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise UserError(f"--{o.name} must be {o.accepted()}, got {text!r}")
    return tuple(items)


def shown_default(o: Option) -> str:
    if o.default is MISSING:
        return "required"
    if o.default is None:
        if o.kind is bool:
            return "auto"
        return "none" if o.none_as is None else f"none ({o.none_as})"
    if o.kind is tuple:
        return "none" if not o.default else repr(list(o.default))
    return str(o.default)


def help_text(cls: type, prog: str, about: str = "") -> str:
    """`--help`: a usage line, one line of description, then one line per flag: its name, the
    kind of value, its meaning and its default."""
    options = all_options(cls)
    positional = [o for o in options if o.positional]
    required = [f"--{o.name} {_metavar(o)}" for o in options if o.required and not o.positional]
    usage = " ".join([f"usage: {prog}", *(o.name.upper() if o.required else f"[{o.name.upper()}]"
                                          for o in positional), *required, "[flags]"])
    rows = []
    for o in options:
        name = f"--[no]{o.name}" if o.kind is bool else f"--{o.name} {_metavar(o)}"
        if o.positional:
            name = f"{o.name.upper()}, {name}"
        rows.append((name, " ".join(x for x in (o.help, f"[default: {shown_default(o)}]") if x)))
    width = min(max(len(n) for n, _ in rows), 30) + 2
    lines = [usage, *([about] if about else []), ""]
    lines += [f"  {n.ljust(width)}{h}" if len(n) < width else f"  {n}  {h}" for n, h in rows]
    return "\n".join(lines) + "\n"


def _metavar(o: Option) -> str:
    if o.metavar:
        return o.metavar
    if o.choices:
        return "{" + ",".join(map(str, o.choices)) + "}"
    return {int: "N", float: "X", tuple: "TEXT|LIST"}.get(o.kind, "TEXT")
