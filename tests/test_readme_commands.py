"""Every command shown in README.md's code blocks exists and accepts the flags shown.

Shell lines are read out of the ``` blocks (`$ ` and `+ ` prompts, `\\` continuations, pipes and
`&&` handled); each `python SCRIPT.py ...` must name a script in the repository, and each `--flag`
must be one that script takes: for a python-fire script (`cli.run(fn)`) a parameter of `fn`, read
from the source with `ast` (no import, so no TensorFlow start-up); for any other script, a flag its
`--help` lists. Each `make TARGET` must be a Makefile target.
"""

from __future__ import annotations

import ast
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
    elif tokens and tokens[0] == "make":
        command, rest = Command(line, "make"), tokens[1:]
    else:
        return None
    for i, token in enumerate(rest):
        if token == "--":  # fire: what follows is for fire itself (-- --help)
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
class Signature:
    params: list[str]
    bools: set[str]
    any_flag: bool = False  # **kwargs


def fire_signature(script: Path) -> Signature | None:
    """Parameters of the function a fire script hands to `cli.run` (None: not such a script)."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    target = None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "run" and node.args and isinstance(node.args[0], ast.Name)):
            target = node.args[0].id
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if target not in functions:
        return None
    args = functions[target].args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    defaults = [None] * (len(args.posonlyargs) + len(args.args) - len(args.defaults)) + [
        *args.defaults, *args.kw_defaults]
    bools = {a.arg for a, d in zip(every, defaults, strict=True)
             if isinstance(d, ast.Constant) and isinstance(d.value, bool)}
    return Signature([a.arg for a in every], bools, any_flag=args.kwarg is not None)


def help_flags(script: Path) -> set[str]:
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    return set(re.findall(r"--([A-Za-z][\w-]*)", out.stdout + out.stderr))


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE)}


def problems(command: Command) -> list[str]:
    """What is wrong with one command (empty when it would be accepted)."""
    if command.program == "make":
        targets = makefile_targets()
        return [f"`make {t}`: no such Makefile target" for t in command.positional
                if "=" not in t and t not in targets]
    script = ROOT / command.program
    if not script.is_file():
        return [f"{command.program}: no such script in the repository"]
    sig = fire_signature(script)
    if sig is None:
        known = help_flags(script)
        return [f"{command.program}: no flag --{f}" for f in command.flags
                if not f.startswith("-") and f not in known and f != "help"]
    found = []
    names = {p.replace("_", "-") for p in sig.params} | set(sig.params)
    for flag in command.flags:
        if flag.startswith("-"):  # fire's short form: -c is the one parameter starting with c
            if len([p for p in sig.params if p.startswith(flag[1:])]) != 1:
                found.append(f"{command.program}: no short flag {flag} (it takes {', '.join(sig.params)})")
            continue
        plain = flag[2:] if flag.startswith("no") and flag[2:] in sig.bools else flag
        if plain not in names and not sig.any_flag and flag != "help":
            found.append(f"{command.program}: no flag --{flag} (it takes {', '.join(sig.params)})")
    free = [p for p in sig.params if p not in command.flags]
    if len(command.positional) > len(free):
        found.append(f"{command.program}: {len(command.positional)} positional arguments "
                     f"{command.positional}, but only {len(free)} parameters are left ({free})")
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
python download_model.py -- --help   # fire's own help
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
    [short] = commands("python download_model.py 124M -t 5 -s hf")
    assert short.flags == {"-t": "5", "-s": "hf"} and problems(short) == []
    [ambiguous] = commands("python download_model.py 124M -r 1")  # --retries or --repo
    assert problems(ambiguous)
    [extra] = commands("python download_model.py 124M 355M src/models x y z w v u")
    assert "positional" in problems(extra)[0]
    [missing] = commands("python no_such_script.py --x")
    assert "no such script" in problems(missing)[0]
    [target] = commands("make no-such-target")
    assert "no such Makefile target" in problems(target)[0]


def test_the_checker_reads_argparse_help_for_other_scripts():
    [good] = commands("python demo/run_demo.py --steps 5 --path scratch")
    assert problems(good) == []
    [bad] = commands("python demo/run_demo.py --stepz 5")
    assert "--stepz" in problems(bad)[0]
