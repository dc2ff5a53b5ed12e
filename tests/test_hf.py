"""Models in and out: our models in transformers (export --format hf), transformers' folders here
(import), OpenAI's layout (export --format openai), checked against transformers and TF1 itself."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers
from test_encoder import EXAMPLES

from gpt2easy import checkpoint as ck
from gpt2easy import hf, hf_vocab, locate
from gpt2easy.commands import ExportConfig
from gpt2easy.encoder import get_encoder
from gpt2easy.errors import UserError
from gpt2easy.exporter import run_export
from gpt2easy.generate import Controls, Generator
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, model, weight_shapes

HP = HParams(n_vocab=50257, n_ctx=32, n_embd=16, n_head=2, n_layer=2)
TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First "
        "Citizen: You are all resolved rather to die than to famish?")
BATTERY = [*EXAMPLES, "one<|endoftext|>two", "<|endoftext|>", TEXT]


def random_weights(hp: HParams, seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor random, gains and biases too, so that any swapped or misnamed weight shows."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.1, s).astype(np.float32) for k, s in weight_shapes(hp).items()}


def our_logits(hp: HParams, weights: dict, ids: np.ndarray) -> np.ndarray:
    return model(GPT2(hp, weights).params(), tf.constant(ids, tf.int32), hp)[0].numpy()


def our_greedy(hp: HParams, weights: dict, prompt: list[int], length: int) -> list[int]:
    steps = Generator(GPT2(hp, weights), "fp32").generate(np.array([prompt]), length,
                                                          Controls.make(temperature=0.0))
    return [int(t[0]) for t, _ in steps]


def load_in_transformers(folder: Path, **kwargs):
    """GPT2LMHeadModel.from_pretrained, failing on any missing/unexpected/mismatched weight, in
    the loading info or in what transformers logs."""
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    tlogger = transformers.utils.logging.get_logger("transformers")
    tlogger.addHandler(handler)
    try:
        m, info = transformers.GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True,
                                                              **kwargs)
    finally:
        tlogger.removeHandler(handler)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert not any(w in log.getvalue().upper() for w in ("MISSING", "UNEXPECTED", "MISMATCH")), \
        log.getvalue()
    return m.eval()


def hf_logits(m, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return m(torch.tensor(ids)).logits.float().numpy()


@pytest.fixture(scope="module")
def ours(tmp_path_factory, vocab_dir):
    """A model folder of ours with random weights, and its weights."""
    folder = tmp_path_factory.mktemp("ours") / "tiny"
    folder.mkdir()
    HP.to_json(folder / "hparams.json")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(vocab_dir / name, folder / name)
    weights = random_weights(HP)
    ck.write_openai_checkpoint(folder, weights)
    return folder, weights


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "hf"
    result = run_export(ExportConfig(source=str(ours[0]), out=str(out)))
    assert sorted(result["files"]) == sorted(p.name for p in out.iterdir())
    return out


# --- ours -> hf -> transformers --------------------------------------------------------------------

def test_export_hf_gives_our_logits_in_transformers(ours, exported, fast):
    folder, weights = ours
    m = load_in_transformers(exported)
    rng = np.random.default_rng(1)
    for ids in (rng.integers(0, HP.n_vocab, (2, HP.n_ctx)), np.array([fast.encode(TEXT)[: HP.n_ctx]])):
        np.testing.assert_allclose(hf_logits(m, ids), our_logits(HP, weights, ids), atol=1e-4, rtol=0)
    config = json.loads((exported / "config.json").read_text())
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5
    assert config["tie_word_embeddings"] and config["bos_token_id"] == config["eos_token_id"] == 50256
    assert transformers.GenerationConfig.from_pretrained(exported).eos_token_id == 50256


def test_export_hf_tokenizer_gives_our_ids(exported, fast):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    for text in BATTERY:
        assert tokenizer(text)["input_ids"] == fast.encode(text), text
    # Only vocab.json + merges.txt (without our tokenizer.json): the same ids.
    (exported.parent / "slow").mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(exported / name, exported.parent / "slow" / name)
    slow = transformers.AutoTokenizer.from_pretrained(exported.parent / "slow")
    assert [slow(t)["input_ids"] for t in BATTERY] == [fast.encode(t) for t in BATTERY]


def test_our_tokenizer_json_is_what_transformers_writes(exported, tmp_path):
    """transformers, given only vocab.json + merges.txt, saves the tokenizer.json we write."""
    (tmp_path / "in").mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(exported / name, tmp_path / "in" / name)
    transformers.AutoTokenizer.from_pretrained(tmp_path / "in").save_pretrained(tmp_path / "saved")
    theirs = json.loads((tmp_path / "saved" / "tokenizer.json").read_text(encoding="utf-8"))
    assert json.loads((exported / "tokenizer.json").read_text(encoding="utf-8")) == theirs


def test_vocab_json_and_merges_txt_are_openais_files(exported, vocab_dir):
    assert json.loads((exported / "vocab.json").read_text(encoding="utf-8")) == json.loads(
        (vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    assert (exported / "merges.txt").read_bytes() == (vocab_dir / "vocab.bpe").read_bytes()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_export_hf_dtypes(ours, tmp_path, dtype):
    folder, weights = ours
    run_export(ExportConfig(source=str(folder), out=str(tmp_path / "out"), dtype=dtype))
    m = load_in_transformers(tmp_path / "out", dtype="auto")
    wte = m.transformer.wte.weight.detach()
    assert wte.dtype == getattr(torch, dtype)
    expected = torch.tensor(weights["model/wte"]).to(getattr(torch, dtype))
    assert torch.equal(wte, expected)
    # Our reader agrees (bfloat16 without torch).
    back = ck.read_weights(str(tmp_path / "out" / "model.safetensors"), HP)
    np.testing.assert_array_equal(back["model/wte"], expected.float().numpy())


# --- transformers' save_pretrained -> ours ----------------------------------------------------------

@pytest.fixture(scope="module", params=[2, 6], ids=["2-layer", "6-layer distilgpt2-like"])
def saved_by_transformers(request, exported, tmp_path_factory):
    """A random GPT-2 as transformers saves it (model.safetensors, config.json, tokenizer.json)."""
    n_layer = request.param
    config = transformers.GPT2Config(vocab_size=50257, n_positions=48, n_embd=24, n_layer=n_layer,
                                     n_head=4)
    torch.manual_seed(n_layer)
    m = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("hf") / f"gpt2-{n_layer}"
    m.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(exported).save_pretrained(folder)
    assert not (folder / "vocab.json").exists()  # transformers 5 writes tokenizer.json alone
    return folder, m


def test_transformers_folder_gives_its_logits_and_greedy_text_here(saved_by_transformers, fast):
    folder, m = saved_by_transformers
    hp, vocab_folder, prefix = locate.open_model(checkpoint=str(folder))
    assert hp == HParams(n_vocab=50257, n_ctx=48, n_embd=24, n_head=4, n_layer=m.config.n_layer)
    assert prefix == str(folder / "model.safetensors")
    weights = ck.load_weights(folder, hp)[1]
    ids = np.random.default_rng(2).integers(0, 50257, (2, 48))
    np.testing.assert_allclose(our_logits(hp, weights, ids), hf_logits(m, ids), atol=1e-4, rtol=0)
    prompt = fast.encode("To be, or not to be")
    with torch.no_grad():
        theirs = m.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                            pad_token_id=50256)[0, len(prompt):].tolist()
    ours = our_greedy(hp, weights, prompt, 20)
    assert ours == theirs
    encoder = get_encoder(vocab_folder)
    assert encoder.decode(ours) == transformers.AutoTokenizer.from_pretrained(folder).decode(theirs)


def test_transformers_folder_works_as_a_model_name(saved_by_transformers, tmp_path, fast):
    folder, _ = saved_by_transformers
    models = tmp_path / "models"
    shutil.copytree(folder, models / "distil")
    hp, vocab_folder, prefix = locate.open_model(str(models), "distil")
    assert prefix == str(models / "distil" / "model.safetensors")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    encoder = get_encoder(vocab_folder)
    for text in BATTERY:
        assert encoder.encode(text) == tokenizer(text)["input_ids"] == fast.encode(text), text
    # A folder given by its path, as --model_name.
    assert locate.open_model("unused", str(models / "distil"))[2] == prefix


def test_tokenizer_json_holds_openais_vocabulary(saved_by_transformers, vocab_dir):
    encoder_text, merges_text = hf_vocab.vocab_texts(saved_by_transformers[0])
    assert json.loads(encoder_text) == json.loads((vocab_dir / "encoder.json").read_text("utf-8"))
    assert merges_text == (vocab_dir / "vocab.bpe").read_text("utf-8")


def test_finetune_from_a_transformers_folder_writes_our_run_folder(saved_by_transformers, tmp_path,
                                                                   vocab_dir, caplog):
    from gpt2easy.trainer import TrainConfig, train

    folder, m = saved_by_transformers
    data = tmp_path / "data.txt"
    data.write_text(TEXT * 20)
    cfg = TrainConfig(dataset=str(data), model_name=str(folder), steps=2, seed=3, sample_every=100,
                      checkpoint_dir=str(tmp_path / "checkpoint"), sample_dir=str(tmp_path / "s"))
    with caplog.at_level(logging.INFO):
        result = train(cfg)
    assert "model.safetensors (step 0)" in caplog.text  # started from the transformers weights
    run = tmp_path / "checkpoint" / "run1"
    assert result["step"] == 2 and (run / "model-2.index").is_file()
    assert HParams.from_json(run / "hparams.json") == hf.read_hparams(folder)
    for name in ("encoder.json", "vocab.bpe"):
        assert (run / name).read_bytes() == (vocab_dir / name).read_bytes()
    assert sorted(dict(tf.train.list_variables(str(run / "model-2")))) == sorted(
        weight_shapes(hf.read_hparams(folder)))
    # ... which exports back to transformers.
    run_export(ExportConfig(source=str(run), out=str(tmp_path / "back")))
    trained = load_in_transformers(tmp_path / "back")
    ids = np.arange(10)[None]
    assert not np.allclose(hf_logits(trained, ids), hf_logits(m, ids), atol=1e-6)


# --- ours -> openai ---------------------------------------------------------------------------------

def test_export_openai_restores_in_a_tf1_graph(tmp_path, ours):
    """What OpenAI's sample code and gpt-2-simple's load_gpt2 do: build the graph's model/
    variables and restore every one by name with a TF1 Saver. transformers 5 has no TF reader
    (load_tf_weights_in_gpt2 is gone), so its old failure mode is checked directly: the bundle
    lists nothing but model/ weights (text entries crashed it, optimizer/ entries too)."""
    from gpt2easy import runfolder

    folder, weights = ours
    run = tmp_path / "run"
    slots = {f"optimizer/{k}/{s}": v for k, v in weights.items() for s in "mv"}
    runfolder.save(run, 7, weights, slots, seed=1, sampler_state={"pos": 0}, avg_loss=(0.0, 0.0),
                   optimizer="adam", max_to_keep=5)
    runfolder.copy_model_files(folder, run, HP)
    out = tmp_path / "openai"
    run_export(ExportConfig(source=str(run), out=str(out), format="openai"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
         "model.ckpt.index", "vocab.bpe"])
    assert json.loads((out / "hparams.json").read_text()) == HP.__dict__
    for prefix in (tf.train.latest_checkpoint(str(out)), tf.train.latest_checkpoint(str(run))):
        assert sorted(dict(tf.train.list_variables(prefix))) == sorted(weights)
        graph = tf.Graph()
        with graph.as_default():
            variables = {n: tf.compat.v1.get_variable(n, v.shape) for n, v in weights.items()}
            saver = tf.compat.v1.train.Saver(list(variables.values()))
            with tf.compat.v1.Session() as sess:
                saver.restore(sess, prefix)
                for name, var in variables.items():
                    np.testing.assert_array_equal(sess.run(var), weights[name])


# --- bad input: one line each, nothing half-written ------------------------------------------------

def one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def copy_of(exported: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    return folder


@pytest.mark.parametrize("keep", [0.5, 0.999, 4])
def test_truncated_safetensors(exported, tmp_path, keep):
    folder = copy_of(exported, tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(UserError, match="not a complete safetensors file") as e:
        ck.load_weights(folder, HP)
    assert "model.safetensors" in one_line(e)


def test_missing_tensor_and_untied_head(exported, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = copy_of(exported, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["transformer.ln_f.bias"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match=r"missing \(1\): model/ln_f/b") as e:
        ck.load_weights(folder, HP)
    one_line(e)
    tensors = load_file(exported / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match="lm_head.weight differs") as e:
        ck.load_weights(folder, HP)
    one_line(e)


@pytest.mark.parametrize("change", [{"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]},
                                    {"activation_function": "relu"}, {"layer_norm_epsilon": 1e-6},
                                    {"tie_word_embeddings": False}, {"n_inner": 100}])
def test_config_of_another_architecture(exported, tmp_path, change):
    folder = copy_of(exported, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UserError, match="config.json") as e:
        locate.open_model(checkpoint=str(folder))
    assert "GPT-2" in one_line(e)


@pytest.mark.parametrize("file,change", [
    ("tokenizer_config.json", {"tokenizer_class": "BertTokenizer"}),
    ("tokenizer_config.json", {"add_prefix_space": True}),
    ("tokenizer.json", {"normalizer": {"type": "Lowercase"}}),
    ("tokenizer.json", {"model": {"type": "WordPiece"}}),
    ("tokenizer.json", {"added_tokens": [{"id": 50257, "content": "<pad>"}]}),
])
def test_tokenizer_that_differs_from_gpt2s(exported, tmp_path, file, change):
    folder = copy_of(exported, tmp_path)
    data = json.loads((folder / file).read_text())
    (folder / file).write_text(json.dumps({**data, **change}))
    (folder / "vocab.json").unlink()  # read the vocabulary from tokenizer.json
    (folder / "merges.txt").unlink()
    with pytest.raises(UserError, match="tokenizer differs from GPT-2's") as e:
        get_encoder(folder)
    one_line(e)


def test_pytorch_bin_only_says_what_to_do(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="save_pretrained") as e:
        locate.open_model(checkpoint=str(folder))
    one_line(e)
    from gpt2easy import runfolder

    with pytest.raises(UserError, match="save_pretrained"):
        runfolder.find_start("latest", tmp_path / "run", folder, HP)


def test_export_never_leaves_half_a_folder(ours, tmp_path, monkeypatch):
    folder, _ = ours
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(UserError, match="not empty") as e:
        run_export(ExportConfig(source=str(folder), out=str(tmp_path / "full")))
    one_line(e)

    def fail(*args, **kwargs):
        raise UserError("cannot write model.safetensors: No space left on device")

    monkeypatch.setattr(hf, "write_weights", fail)
    with pytest.raises(UserError, match="No space"):
        run_export(ExportConfig(source=str(folder), out=str(tmp_path / "out")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    with pytest.raises(UserError, match="float32 only"):
        run_export(ExportConfig(source=str(folder), out=str(tmp_path / "o"), format="openai",
                                dtype="float16"))


@pytest.mark.slow
def test_export_script(root, ours, tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, str(root / "export.py"), *args], capture_output=True,
                              text=True, timeout=300)

    proc = run(str(ours[0]), str(tmp_path / "out"), "--format", "openai")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("exported ")
    assert (tmp_path / "out" / "model.ckpt.index").is_file()
    proc = run(str(ours[0]), str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"export.py: error: {tmp_path / 'out'} already exists and is not empty; choose a new folder "
        f"or remove it"]
