"""The command lines derived from the config dataclasses (gpt2easy.flagparse, options, cli).

In-process: parsing, the one-line messages, `--help`, and that the commands' flags and their
dataclasses cannot drift apart. The subprocess rows (exit codes, no TensorFlow, no run folder) are in
test_faults_bad_input.py.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from gpt2easy import cli, commands, flagparse, sample_commands
from gpt2easy.errors import UserError
from gpt2easy.folders import resolve_models_dir
from gpt2easy.options import MISSING, check_config, options_of
from gpt2easy.train_config import TrainConfig

# The flags of the classic scripts as they were (python-fire signatures before this change):
# each command must take exactly these.
CLASSIC = {
    "download": "model_name models_dir base_url timeout retries verbose source repo",
    "encode": "in_text out_npz model_name models_dir combine encoding workers legacy_endoftext verbose "
              "keep_line_endings column header",
    "train": "dataset model_name models_dir combine encoding batch_size learning_rate accumulate_gradients "
             "memory_saving_gradients only_train_transformer_layers optimizer noise top_k top_p "
             "restore_from run_name sample_every sample_length sample_num save_every val_dataset "
             "val_batch_size val_batch_count val_every steps seed max_checkpoints print_every "
             "checkpoint_dir sample_dir warmup_steps lr_decay lr_decay_steps min_lr grad_clip "
             "weight_decay precision xla strategy verbose keep_line_endings column header keep_best "
             "early_stopping save_optimizer",
    "sample": "model_name models_dir run_name checkpoint seed nsamples batch_size length temperature "
              "top_k top_p repetition_penalty stop stop_at_endoftext precision verbose prompts_file output "
              "keep_warm",
    "generate": "model_name models_dir run_name checkpoint seed nsamples batch_size length temperature "
                "top_k top_p repetition_penalty stop stop_at_endoftext precision output verbose keep_warm",
}


def parse(argv, cls=TrainConfig):
    return flagparse.parse(cls, list(argv), "train.py")


def error(argv, cls=TrainConfig) -> str:
    with pytest.raises(UserError) as e:
        parse(argv, cls)
    return str(e.value)


# --- values ------------------------------------------------------------------------------------


def test_both_spellings_and_the_defaults():
    cfg, verbose = parse(["--dataset", "d.npz", "--learning_rate=1e-4", "--steps", "3"])
    assert cfg == TrainConfig(dataset="d.npz", learning_rate=1e-4, steps=3) and not verbose
    assert cfg.batch_size == 1 and cfg.steps == 3 and cfg.sample_length is None


@pytest.mark.parametrize("argv, value", [
    (["--xla"], True), (["--xla=False"], False), (["--xla=True"], True), (["--xla", "False"], False),
    (["--xla", "true"], True), (["--noxla"], False), ([], None), (["--xla=0"], False),
    (["--xla", "auto"], None), (["--xla=AUTO"], None),  # an optional boolean: None = auto
])
def test_booleans(argv, value):
    cfg, _ = parse(["--dataset", "d", *argv])
    assert cfg.xla is value


@pytest.mark.parametrize("argv, value", [
    (["--memory_saving_gradients"], True), (["--nomemory_saving_gradients"], False), ([], False),
])
def test_plain_booleans_take_no_auto(argv, value):
    cfg, _ = parse(["--dataset", "d", *argv])
    assert cfg.memory_saving_gradients is value
    with pytest.raises(UserError, match=r"^--memory_saving_gradients must be True or False, got 'auto'$"):
        parse(["--dataset", "d", "--memory_saving_gradients=auto"])


@pytest.mark.parametrize("argv", [["--verbose"], ["--verbose=True"], ["--verbose", "yes"]])
def test_verbose_in_any_spelling(argv):
    assert parse(["--dataset", "d", *argv])[1] is True


def test_noverbose_and_verbose_false_are_off():
    assert parse(["--dataset", "d", "--verbose=False"])[1] is False
    assert parse(["--dataset", "d", "--noverbose"])[1] is False


def test_minus_one_means_none_where_the_classic_script_said_so():
    cfg, _ = parse(["--dataset", "d", "--steps", "-1", "--sample_length=-1", "--lr_decay_steps", "-1"])
    assert cfg.steps is None and cfg.sample_length is None and cfg.lr_decay_steps is None
    assert "--steps" in error(["--dataset", "d", "--steps", "-2"])


def test_positionals_and_their_flags():
    cfg, _ = flagparse.parse(commands.EncodeConfig, ["a.txt", "--combine", "7", "b.npz"], "encode.py")
    assert (cfg.in_text, cfg.out_npz, cfg.combine) == ("a.txt", "b.npz", 7)
    cfg, _ = flagparse.parse(commands.EncodeConfig, ["--out_npz", "b.npz", "a.txt"], "encode.py")
    assert (cfg.in_text, cfg.out_npz) == ("a.txt", "b.npz")


def test_stop_strings_as_fire_read_them():
    cfg, _ = flagparse.parse(sample_commands.SampleConfig, ["--stop", '["\\n\\n", "THE END"]'], "x")
    assert cfg.stop == ("\n\n", "THE END")
    cfg, _ = flagparse.parse(sample_commands.SampleConfig, ["--stop=THE END"], "x")
    assert cfg.stop == ("THE END",)


# --- errors: one line naming the flag, the value and what is accepted ------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["--learning_rat", "1"], r"^unknown flag --learning_rat \(did you mean --learning_rate\?\)$"),
    (["--learning-rate", "1"], r"^unknown flag --learning-rate \(did you mean --learning_rate\?\)$"),
    (["--stpes=3"], r"^unknown flag --stpes \(did you mean --steps\?\)$"),
    (["--zzzzzz"], r"^unknown flag --zzzzzz \(see --help\)$"),
    (["-s", "3"], r"^unknown flag -s"),
    (["--noxlaa"], r"did you mean --noxla\?"),
    (["--steps", "abc"], r"^--steps must be a whole number.* got 'abc'$"),
    (["--steps", "1.5"], r"^--steps must be a whole number.* got '1\.5'$"),
    (["--learning_rate", "fast"], r"^--learning_rate must be a number.* got 'fast'$"),
    (["--learning_rate", "nan"], r"^--learning_rate must be a finite number"),
    (["--learning_rate", "0"], r"^--learning_rate must be > 0, got 0$"),
    (["--batch_size", "0"], r"^--batch_size must be at least 1, got 0$"),
    (["--top_p", "1.5"], r"^--top_p must be between 0 and 1, got 1\.5$"),
    (["--noise", "1"], r"^--noise must be at least 0 and < 1, got 1$"),
    (["--optimizer", "adagrad"], r"^--optimizer must be one of adam, adamw, sgd, got 'adagrad'$"),
    (["--precision", "fp8"], r"^--precision must be one of auto, fp32, bf16, got 'fp8'$"),
    (["--xla=maybe"], r"^--xla must be True, False or auto, got 'maybe'$"),
    (["--run_name="], r"^--run_name got an empty value"),
    (["--steps", ""], r"^--steps got an empty value; it takes a whole number"),
    (["--steps", "1", "--steps", "2"], r"^--steps given twice \('1' and '2'\)"),
    (["--xla", "--noxla"], r"^--xla given twice"),
    (["--steps"], r"^--steps needs a value"),
    (["extra"], r"^unexpected argument 'extra'"),
])
def test_bad_command_lines_are_one_line(argv, expected):
    message = error(["--dataset", "d", *argv])
    assert "\n" not in message
    assert re.search(expected, message), message


def test_unknown_flag_wins_over_a_missing_one():
    assert error(["--datset", "d"]) == "unknown flag --datset (did you mean --dataset?)"
    assert error([]).startswith("missing --dataset: ")


def test_check_config_applies_the_same_limits_to_configs_made_in_python():
    with pytest.raises(UserError, match="--batch_size must be at least 1, got 0"):
        check_config(TrainConfig(dataset="d", batch_size=0))
    with pytest.raises(UserError, match="--optimizer must be one of"):
        check_config(TrainConfig(dataset="d", optimizer="adagrad"))
    with pytest.raises(UserError, match="--steps must be a whole number"):
        check_config(TrainConfig(dataset="d", steps="3"))
    check_config(TrainConfig(dataset="d"))


# --- help and drift ----------------------------------------------------------------------------------


def configs():
    return {name: cli.load(c.config) for name, c in cli.COMMANDS.items()}


@pytest.mark.parametrize("name", list(CLASSIC))
def test_each_command_has_exactly_the_flags_of_its_classic_script(name):
    assert [o.name for o in flagparse.all_options(configs()[name])] != []
    assert {o.name for o in flagparse.all_options(configs()[name])} == set(CLASSIC[name].split())


@pytest.mark.parametrize("name", list(CLASSIC))
def test_help_lists_every_field_with_its_default_and_help_and_nothing_else(name):
    cls = configs()[name]
    text = flagparse.help_text(cls, name, "about")
    rows = [line for line in text.splitlines() if line.startswith("  ")]
    options = flagparse.all_options(cls)
    assert len(rows) == len(options)  # one line per flag, nothing else
    for o, row in zip(options, rows, strict=True):
        assert re.search(rf"--(\[no\])?{o.name}\b", row), row
        assert o.help and o.help in row, f"{o.name}: no help"
        assert row.endswith(f"[default: {flagparse.shown_default(o)}]"), row
    shown = set(re.findall(r"--(?:\[no\])?(\w+)", "\n".join(rows)))
    assert shown == {o.name for o in options}


@pytest.mark.parametrize("name", list(CLASSIC))
def test_the_parser_gives_each_field_its_declared_default(name):
    cls = configs()[name]
    required = {o.name: "x" for o in options_of(cls) if o.default is MISSING}
    argv = [f"--{k}={v}" for k, v in required.items()]
    cfg, _ = flagparse.parse(cls, argv, name)
    for f in dataclasses.fields(cls):
        if f.name in required:
            want = required[f.name]
        else:
            want = f.default if f.default is not MISSING else f.default_factory()
        assert getattr(cfg, f.name) == want, f.name
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} is not declared with opt(help=...)"


def test_train_choices_are_those_of_the_modules_that_check_them():
    from gpt2easy import distribute, machine, model, optim, train_config

    assert train_config.OPTIMIZERS == optim.OPTIMIZERS
    assert train_config.LR_DECAYS == optim.LR_DECAYS
    assert set(machine.PRECISION_CHOICES) == {"auto", *model.COMPUTE_DTYPES}
    from gpt2easy import checkpoint

    assert set(train_config.SAVE_OPTIMIZER) == set(checkpoint.SAVE_OPTIMIZER)
    assert train_config.STRATEGIES == distribute.STRATEGIES


def test_trainer_still_exports_train_config():
    from gpt2easy import trainer

    assert trainer.TrainConfig is TrainConfig


def test_the_command_line_imports_no_tensorflow_nor_numpy(root):
    code = ("import sys; sys.argv = ['train.py', '--dataset', 'x', '--learning_rat', '1']\n"
            "from gpt2easy import cli\n"
            "try:\n    cli.script('train')\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
            "for name in cli.COMMANDS:\n    cli.load(cli.COMMANDS[name].config)\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'\n"
            "assert 'numpy' not in sys.modules, 'NumPy imported (0.1-0.3 s of start-up)'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=root / "src", capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "train.py: error: unknown flag --learning_rat (did you mean --learning_rate?)\n"


def test_plain_functions_get_the_same_parser():
    def fetch(data_dir: str = "data", source: str | None = None, retries: int = 3) -> None:
        """Fetch things.

        Args:
            data_dir: where they go.
            source: a folder
                or a file.
            retries: how often.
        """

    cls = cli.config_of_function(fetch)
    cfg, _ = flagparse.parse(cls, ["out", "--retries", "5"], "fetch.py")
    assert (cfg.data_dir, cfg.source, cfg.retries) == ("out", None, 5)
    assert {o.name: o.help for o in options_of(cls)} == {
        "data_dir": "where they go.", "source": "a folder or a file.", "retries": "how often."}
    with pytest.raises(UserError, match="did you mean --retries"):
        flagparse.parse(cls, ["--retrys", "5"], "fetch.py")


# --- the models folder ---------------------------------------------------------------------------------


def test_models_folder_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GPT2EASY_MODELS_DIR", raising=False)
    assert str(resolve_models_dir(None)) == "models"
    (tmp_path / "src" / "models").mkdir(parents=True)
    assert str(resolve_models_dir(None)) == "src/models"
    monkeypatch.setenv("GPT2EASY_MODELS_DIR", str(tmp_path / "env"))
    assert resolve_models_dir(None) == tmp_path / "env"
    assert str(resolve_models_dir("given")) == "given"
    cfg = cli.resolve_folders(commands.EncodeConfig(in_text="a", out_npz="b"))
    assert cfg.models_dir == str(tmp_path / "env")
