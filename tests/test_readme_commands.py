"""Every command shown in README.md's code blocks exists and accepts the flags shown.

Shell lines are read out of the ``` blocks (`$ ` and `+ ` prompts, `\\` continuations, pipes and
`&&` handled); each `python SCRIPT.py ...` must name a script in the repository and each
`gpt2easy COMMAND ...` a registered command, and each `--flag` must be one that its `--help` lists
(`--[no]flag` for a boolean: both spellings), with no more positional arguments than its usage line
names. Each `make TARGET` must be a Makefile target.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SHELL = {"python", "py", "json", "toml", "ini", "yaml", "yml", "diff"}
PYTHONS = re.compile(r"(.*/)?python(3(\.\d+)?)?$")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    line: str
    program: str  # a script path (python ...) or "make"
    positional: list[str] = field(default_factory=list)
    flags: dict[str, str | None] = field(default_factory=dict)  # name -> value after '=' or None


def shell_lines(markdown: str) -> list[str]:
    """The command lines of the shell-like ``` blocks, continuations joined, prompts removed."""
    lines, block, lang = [], None, ""
    for raw in markdown.splitlines():
        fence = re.match(r"\s*```\s*([\w+-]*)", raw)
        if fence:
            if block is None:
                block, lang = [], fence.group(1).lower()
            else:
                if lang not in NOT_SHELL:
                    lines += _join_continuations(block)
                block = None
            continue
        if block is not None:
            block.append(raw)
    return lines


def _join_continuations(block: list[str]) -> list[str]:
    out, pending = [], ""
    for raw in block:
        text = raw.strip()
        if text.startswith(("$ ", "+ ")):
            text = text[2:]
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        out.append(pending + text)
        pending = ""
    if pending:
        out.append(pending)
    return [line for line in out if line]


def commands(line: str) -> list[Command]:
    """The `python X.py ...` and `make ...` commands in one shell line (pipes, &&, ; split)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a command line (sample output, prose)
        return []
    found, segment = [], []
    for token in [*tokens, ";"]:
        if token in ("|", "||", "&&", ";", "&", "(", ")"):
            command = _command(line, segment)
            if command:
                found.append(command)
            segment = []
        else:
            segment.append(token)
    return found


def _command(line: str, tokens: list[str]) -> Command | None:
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if len(tokens) >= 2 and PYTHONS.match(tokens[0]) and tokens[1].endswith(".py"):
        command, rest = Command(line, tokens[1]), tokens[2:]
    elif len(tokens) >= 2 and tokens[0] == "gpt2easy":
        command, rest = Command(line, f"gpt2easy {tokens[1]}"), tokens[2:]
    elif tokens and tokens[0] == "make":
        command, rest = Command(line, "make"), tokens[1:]
    else:
        return None
    for i, token in enumerate(rest):
        if token == "--":  # end of the flags
            break
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            command.flags[name] = value if eq else None
        elif token.startswith("-") and token != "-":
            command.flags[token] = None
        elif i and rest[i - 1].startswith("-") and rest[i - 1] != "-" and "=" not in rest[i - 1]:
            previous = rest[i - 1]
            command.flags[previous[2:] if previous.startswith("--") else previous] = token
        else:
            command.positional.append(token)
    return command


@dataclass
class Usage:
    flags: set[str]
    bools: set[str]
    positional: int


@functools.cache
def usage(program: str) -> Usage:
    """What `PROGRAM --help` lists: its flags, which are booleans, how many positional arguments."""
    if program.startswith("gpt2easy "):
        argv = [sys.executable, "-m", "gpt2easy", program.split()[1], "--help"]
    else:
        argv = [sys.executable, str(ROOT / program), "--help"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    text = out.stdout + out.stderr
    bools = set(re.findall(r"--\[no\]([A-Za-z][\w-]*)", text))
    flags = set(re.findall(r"--([A-Za-z][\w-]*)", text)) | bools | {f"no{b}" for b in bools}
    first = text.splitlines()[0] if text else ""
    positional = len(re.findall(r"\b[A-Z][A-Z_]+\b", first.split("[flags]")[0].split("--")[0]))
    return Usage(flags, bools, positional)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE)}


def problems(command: Command) -> list[str]:
    """What is wrong with one command (empty when it would be accepted)."""
    if command.program == "make":
        targets = makefile_targets()
        return [f"`make {t}`: no such Makefile target" for t in command.positional
                if "=" not in t and t not in targets]
    if command.program.startswith("gpt2easy "):
        from gpt2easy.cli import COMMANDS

        if command.program.split()[1] not in COMMANDS:
            return [f"{command.program}: no such command"]
    elif not (ROOT / command.program).is_file():
        return [f"{command.program}: no such script in the repository"]
    known = usage(command.program)
    found = [f"{command.program}: no flag {f if f.startswith('-') else '--' + f}" for f in command.flags
             if f not in known.flags and f != "help"]
    if len(command.positional) > known.positional:
        found.append(f"{command.program}: {len(command.positional)} positional arguments "
                     f"{command.positional}, but it takes {known.positional}")
    return found


# ----------------------------------------------------------------------------- the README itself


def readme_commands() -> list[Command]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [c for line in shell_lines(text) for c in commands(line)]


def test_readme_shows_at_least_the_two_make_commands():
    shown = {(c.program, tuple(c.positional)) for c in readme_commands()}
    assert ("make", ("demo",)) in shown and ("make", ("test",)) in shown


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: c.line[:60])
def test_readme_command_is_accepted(command):
    assert problems(command) == [], command.line


# ----------------------------------------------------------------------------- the checker


SNIPPET = """
Intro text with python fake.py --ignored outside a block.

```sh
$ python download_model.py 124M --models_dir=src/models
PYTHONPATH=src .venv/bin/python3 download_model.py 124M \\
    --timeout 5 --verbose
printf 'a\\n' | python demo/run_demo.py --steps 5 && make test
python download_model.py -- --help   # after --: not a flag
```

```python
python no_such_script.py --x   # inside a python block: not a shell line
```
"""


def test_shell_lines_and_commands_are_read_out_of_the_blocks():
    found = [c for line in shell_lines(SNIPPET) for c in commands(line)]
    assert [c.program for c in found] == [
        "download_model.py", "download_model.py", "demo/run_demo.py", "make", "download_model.py"]
    assert found[0].positional == ["124M"] and found[0].flags == {"models_dir": "src/models"}
    assert found[1].flags == {"timeout": "5", "verbose": None}
    assert found[2].flags == {"steps": "5"} and found[3].positional == ["test"]
    assert found[4].flags == {} and found[4].positional == []


def test_the_checker_accepts_real_flags_and_catches_wrong_ones():
    [good] = commands("python download_model.py 124M --models_dir=x --base_url http://h --noverbose")
    assert problems(good) == []
    [bad] = commands("python download_model.py 124M --model_dir=x")
    assert problems(bad) and "--model_dir" in problems(bad)[0]
    [short] = commands("python download_model.py 124M -t 5 -r 1")
    assert short.flags == {"-t": "5", "-r": "1"} and problems(short)  # no short flags
    [extra] = commands("python download_model.py 124M 355M")
    assert "positional" in problems(extra)[0]
    [encode] = commands("gpt2easy encode in.txt out.npz --combine 10 --legacy_endoftext")
    assert problems(encode) == []
    [typo] = commands("gpt2easy train --dataset x --learning_rat 1")
    assert "--learning_rat" in problems(typo)[0]
    [nothing] = commands("gpt2easy trian --dataset x")
    assert "no such command" in problems(nothing)[0]
    [missing] = commands("python no_such_script.py --x")
    assert "no such script" in problems(missing)[0]
    [target] = commands("make no-such-target")
    assert "no such Makefile target" in problems(target)[0]


def test_the_checker_reads_argparse_help_for_other_scripts():
    [good] = commands("python demo/run_demo.py --steps 5 --path scratch")
    assert problems(good) == []
    [bad] = commands("python demo/run_demo.py --stepz 5")
    assert "--stepz" in problems(bad)[0]
