"""transformers 4.x's own reader of OpenAI-format TF checkpoints (`load_tf_weights_in_gpt2`, removed in
transformers 5) on our training checkpoints and on `export.py --format openai`.

transformers 4 and 5 can't live in one environment, so this runs transformers 4 in a subprocess from
a separate folder named by GPT2EASY_TRANSFORMERS4 (made with e.g. `pip install --no-deps --target DIR
transformers==4.57.1 huggingface_hub==0.36.0 tokenizers==0.22.1`; torch comes from this venv), and
skips without it. The old layout (optimizer and loop state inside model-N) is checked to fail as
the issue found, so the test can tell the difference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt2easy import checkpoint as ck
from gpt2easy import runfolder
from gpt2easy.commands import ExportConfig
from gpt2easy.exporter import run_export
from gpt2easy.hparams import HParams
from gpt2easy.model import GPT2, model, weight_shapes

HP = HParams(n_vocab=50257, n_ctx=16, n_embd=16, n_head=2, n_layer=2)
T4 = os.environ.get("GPT2EASY_TRANSFORMERS4")

CHILD = r"""
import sys, numpy as np, torch, transformers
from transformers.models.gpt2.modeling_gpt2 import load_tf_weights_in_gpt2
assert transformers.__version__.startswith("4."), transformers.__version__
config = transformers.GPT2Config(vocab_size=50257, n_positions=16, n_embd=16, n_layer=2, n_head=2)
m = transformers.GPT2Model(config).eval()
try:
    load_tf_weights_in_gpt2(m, config, sys.argv[1])
except Exception as e:
    print("FAILED", type(e).__name__, e); sys.exit(0)
ids = torch.tensor(np.load(sys.argv[2]))
with torch.no_grad():
    h = m(ids).last_hidden_state
    logits = h @ m.wte.weight.T
np.save(sys.argv[3], logits.numpy())
print("LOADED")
"""


@pytest.mark.slow
@pytest.mark.skipif(not T4, reason="GPT2EASY_TRANSFORMERS4 (a folder with transformers 4.x) not set")
def test_transformers4_tf_reader_loads_our_checkpoints(tmp_path, vocab_dir):
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in weight_shapes(HP).items()}
    slots = {f"optimizer/{k}/{s}": v for k, v in weights.items() for s in "mv"}
    run = tmp_path / "run"
    prefix = runfolder.save(run, 3, weights, slots, seed=1, sampler_state={"pos": 0},
                            avg_loss=(0.0, 0.0), optimizer="adam", max_to_keep=5)
    HP.to_json(run / "hparams.json")
    for name in ("encoder.json", "vocab.bpe"):
        (run / name).write_bytes((vocab_dir / name).read_bytes())
    run_export(ExportConfig(source=str(run), out=str(tmp_path / "openai"), format="openai"))
    old = tmp_path / "old"
    old.mkdir()
    ck._write_bundle(old / "model-3", ck.read_tensors(prefix))  # the layout before the split
    ids = rng.integers(0, HP.n_vocab, (2, HP.n_ctx))
    np.save(tmp_path / "ids.npy", ids)
    ours = model(GPT2(HP, weights).params(), ids, HP)[0].numpy()
    env = dict(os.environ, PYTHONPATH=T4)

    def child(path: str | Path) -> str:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "ids.npy"),
                               str(tmp_path / "out.npy")], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip().splitlines()[-1]

    for path in (prefix, tmp_path / "openai" / "model.ckpt"):
        assert child(path) == "LOADED"
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ours, atol=1e-4, rtol=0)
    assert child(old / "model-3").startswith("FAILED")
