"""evaluate: the sliding-window loss against a NumPy forward pass and against transformers' GPT-2
on the same weights, each with the windows computed here independently (transformers' recipe);
every token counted exactly once; bytes; the script's output and errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from test_model import random_weights, reference_logits

from gpt2easy.dataset import save_npz
from gpt2easy.evaluate import join_chunks, score, windows
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2

HP = HParams(n_vocab=96, n_ctx=16, n_embd=24, n_head=3, n_layer=2)


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def reference_loss(logits_of, ids, n_ctx: int, stride: int) -> tuple[float, int]:
    """transformers' perplexity recipe (docs: "Perplexity of fixed-length models"), with windows of
    n_ctx + 1 ids whose last id is only a label, and the NLL summed (not mean x trg_len)."""
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + n_ctx + 1, len(ids))
        trg_len = end - prev_end
        window = list(ids[begin:end])
        labels = list(window)
        for i in range(len(labels) - trg_len):
            labels[i] = -100
        logp = log_softmax(np.asarray(logits_of(window[:-1]), np.float64))
        for i, label in enumerate(labels[1:]):
            if label != -100:
                nll -= logp[i, label]
                count += 1
        prev_end = end
        if end == len(ids):
            break
    return nll / count, count


@pytest.fixture(scope="module")
def weights():
    return random_weights(HP, seed=4)


@pytest.fixture(scope="module")
def gpt(weights):
    return GPT2(HP, weights)


@pytest.mark.parametrize("n, stride", [(70, 16), (70, 5), (70, 1), (10, 16), (17, 16), (17, 7),
                                       (18, 16), (2, 3), (48, 16), (49, 16)])
def test_every_target_is_counted_once_with_enough_context(n, stride):
    n_ctx, seen = 16, []
    for k, (begin, end, skip) in enumerate(windows(n, n_ctx, stride)):
        assert begin == k * stride and end - begin <= n_ctx + 1
        targets = list(range(begin + 1 + skip, end))
        seen += targets
        if k:  # after the first window: at least n_ctx + 1 - stride ids before each prediction
            assert all(t - begin >= n_ctx + 1 - stride for t in targets)
    assert seen == list(range(1, n))


def test_join_chunks_puts_one_endoftext_before_each_chunk():
    got = join_chunks([np.array([1, 2]), np.array([50256, 3]), np.array([4, 50256]), np.array([5])])
    assert got.tolist() == [50256, 1, 2, 50256, 3, 50256, 4, 50256, 5]
    assert join_chunks([np.array([7])]).tolist() == [50256, 7]


@pytest.mark.parametrize("n, stride, batch", [
    (70, 16, 4),   # stride = n_ctx, last batch padded
    (70, 5, 3),    # overlapping windows
    (10, 0, 8),    # shorter than one window (0 = n_ctx)
    (17, 16, 2),   # exactly one window of n_ctx + 1 ids
    (18, 16, 1),   # one window and one id
])
def test_loss_equals_numpy_reference(gpt, weights, n, stride, batch):
    ids = np.random.default_rng(n).integers(0, HP.n_vocab, n)
    want, count = reference_loss(lambda w: reference_logits(weights, w, HP), ids, HP.n_ctx,
                                 stride or HP.n_ctx)
    got = score(gpt, ids, stride=stride, batch_size=batch, progress=False)
    assert got.tokens == count == n - 1
    assert got.loss == pytest.approx(want, abs=1e-4)


def test_bf16_is_close(gpt, weights):
    ids = np.random.default_rng(1).integers(0, HP.n_vocab, 50)
    fp32 = score(gpt, ids, progress=False)
    bf16 = score(gpt, ids, precision="bf16", progress=False)
    assert bf16.loss == pytest.approx(fp32.loss, rel=0.05)


def hf_model(weights, hp):
    """transformers' GPT2LMHeadModel holding the same weights (OpenAI name -> HF name)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=hp.n_vocab, n_positions=hp.n_ctx, n_embd=hp.n_embd,
                                     n_layer=hp.n_layer, n_head=hp.n_head, activation_function="gelu_new",
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     layer_norm_epsilon=1e-5)
    hf = transformers.GPT2LMHeadModel(config).eval()
    state = {"transformer.wte.weight": weights["model/wte"],
             "transformer.wpe.weight": weights["model/wpe"],
             "transformer.ln_f.weight": weights["model/ln_f/g"],
             "transformer.ln_f.bias": weights["model/ln_f/b"], "lm_head.weight": weights["model/wte"]}
    names = {"ln_1.weight": "ln_1/g", "ln_1.bias": "ln_1/b", "ln_2.weight": "ln_2/g", "ln_2.bias": "ln_2/b",
             "attn.c_attn.weight": "attn/c_attn/w", "attn.c_attn.bias": "attn/c_attn/b",
             "attn.c_proj.weight": "attn/c_proj/w", "attn.c_proj.bias": "attn/c_proj/b",
             "mlp.c_fc.weight": "mlp/c_fc/w", "mlp.c_fc.bias": "mlp/c_fc/b",
             "mlp.c_proj.weight": "mlp/c_proj/w", "mlp.c_proj.bias": "mlp/c_proj/b"}
    for i in range(hp.n_layer):
        for hf_name, ours in names.items():
            value = weights[f"model/h{i}/{ours}"]
            # OpenAI's [1, in, out] matrices are transformers' Conv1D [in, out] weights.
            state[f"transformer.h.{i}.{hf_name}"] = value[0] if value.ndim == 3 else value
    missing, _ = hf.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()}, strict=False)
    assert not [m for m in missing if not m.endswith((".attn.bias", ".attn.masked_bias"))], missing

    def logits_of(window):
        with torch.no_grad():
            return hf(torch.tensor([window])).logits[0].double().numpy()

    return logits_of


@pytest.mark.parametrize("n, stride", [(90, 16), (90, 6), (12, 16)])
def test_loss_equals_transformers_on_the_same_weights(gpt, weights, n, stride):
    logits_of = hf_model(weights, HP)
    ids = np.random.default_rng(n + stride).integers(0, HP.n_vocab, n)
    want, count = reference_loss(logits_of, ids, HP.n_ctx, stride)
    got = score(gpt, ids, stride=stride, batch_size=4, progress=False)
    assert got.tokens == count
    assert got.loss == pytest.approx(want, abs=1e-4)


def test_bytes_count_the_decoded_text_without_separators(fast):
    ids = np.array([50256, *fast.encode("héllo wörld"), 50256, *fast.encode("\nsecond")])
    gpt = GPT2(HParams(n_vocab=50257, n_ctx=8, n_embd=8, n_head=2, n_layer=1))
    got = score(gpt, ids, encoder=fast, progress=False)
    assert got.bytes == len("héllo wörld\nsecond".encode())
    assert got.bits_per_byte == pytest.approx(got.loss * got.tokens / math.log(2) / got.bytes)


def test_a_stride_above_the_context_is_refused(gpt):
    from gpt2easy.errors import UserError

    with pytest.raises(UserError, match="--stride must be between 1 and the model's context 16"):
        score(gpt, np.arange(40) % HP.n_vocab, stride=17, progress=False)


# --- the script ------------------------------------------------------------------------------------

TINY = HParams(n_vocab=50257, n_ctx=16, n_embd=16, n_head=2, n_layer=1)


def run_script(root, cwd, *args):
    return subprocess.run([sys.executable, str(root / "evaluate.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_script_json_on_text_and_npz_agree(tmp_path, root, make_model, fast):
    from gpt2easy.model import initial_weights

    make_model(tmp_path / "models" / "tiny", TINY, initial_weights(TINY, seed=2))
    (tmp_path / "texts").mkdir()
    docs = ["To be, or not to be, that is the question.\n" * 3, "Whether 'tis nobler in the mind."]
    for i, doc in enumerate(docs):
        (tmp_path / "texts" / f"{i}.txt").write_text(doc, encoding="utf-8")
    chunks = [np.concatenate([fast.encode_to_numpy(docs[0]), [50256], fast.encode_to_numpy(docs[1])])]
    save_npz(tmp_path / "val.npz", chunks)
    results = []
    for data in ("texts", "val.npz"):
        out = run_script(root, tmp_path, data, "--models_dir=models", "--model_name=tiny", "--json",
                         "--stride=5", "--batch_size=3")
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.splitlines()) == 1
        assert "nats/token" in out.stderr and "bits/byte" in out.stderr
        results.append(json.loads(out.stdout))
    text, npz = results
    assert text["tokens"] == npz["tokens"] == len(chunks[0])  # the separator 50256 is predicted too
    assert text["loss"] == pytest.approx(npz["loss"], abs=1e-6)
    assert text["bytes"] == npz["bytes"] == sum(len(d.encode()) for d in docs)
    assert text["perplexity"] == pytest.approx(math.exp(text["loss"]))


@pytest.mark.slow
def test_script_errors_are_one_line(tmp_path, root, make_model):
    from gpt2easy.model import initial_weights

    make_model(tmp_path / "models" / "tiny", TINY, initial_weights(TINY, seed=2))
    save_npz(tmp_path / "val.npz", [np.arange(40)])
    cases = [(("val.npz", "--stride=17"), "--stride must be at most the model's context 16"),
             (("missing.npz",), "does not exist"),
             (("val.npz", "--checkpoint=best"), "--checkpoint best needs --run_name"),
             (("val.npz", "--run_name=nope"), "run 'nope' not found"),
             (("val.npz", "--run_name=nope", "--checkpoint=best"), "run 'nope' not found")]
    for args, message in cases:
        out = run_script(root, tmp_path, *args, "--models_dir=models", "--model_name=tiny")
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""
