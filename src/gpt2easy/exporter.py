"""Export a model (a run folder, a model folder or one checkpoint) for other tools, weights only.

- `hf`: a Hugging Face folder (see hf.py) that `transformers` loads with
  `GPT2LMHeadModel.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)`, ready for the hub.
- `openai`: OpenAI's release layout (`checkpoint`, `model.ckpt.index`, `model.ckpt.data-*`,
  `hparams.json`, `encoder.json`, `vocab.bpe`), what OpenAI's sampling code and gpt-2-simple read.

The export is written into a temporary folder beside OUT and renamed onto it at the end, so OUT is
either complete or absent (an existing non-empty OUT is refused).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from . import hf
from .commands import ExportConfig
from .errors import UserError
from .files import atomic_write_text, fsync_dir
from .folders import DEFAULT_MODELS_DIR, is_model_folder, model_dir
from .hf_vocab import vocab_texts
from .locate import find_checkpoint

logger = logging.getLogger(__name__)

FORMATS = ("hf", "openai")


def resolve_source(source: str, models_dir: str = DEFAULT_MODELS_DIR) -> tuple[Path, str]:
    """(model folder with hparams and vocabulary, checkpoint path) of what SOURCE names."""
    path = Path(source).expanduser()
    if not path.exists() and not Path(f"{path}.index").exists():
        if "/" in source:
            raise UserError(f"{source}: no such folder or checkpoint")
        path = model_dir(models_dir, source)
    folder = path if path.is_dir() else path.parent
    if not is_model_folder(folder):
        raise UserError(f"{folder}: not a model folder (needs hparams.json or config.json and the "
                        f"vocabulary: encoder.json + vocab.bpe, or vocab.json + merges.txt)")
    return folder, (str(path) if path.is_dir() else find_checkpoint(path))


def run_export(cfg: ExportConfig, before_tensorflow=None) -> dict:
    """Write the export; returns {"out", "format", "checkpoint", "files"}. The flags and the source
    are checked first; `before_tensorflow()` is called after that, before TensorFlow is imported."""
    if cfg.format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if cfg.dtype not in hf.DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(hf.DTYPES)}, got {cfg.dtype!r}")
    if cfg.format == "openai" and cfg.dtype != "float32":
        raise UserError("--format openai is float32 only (OpenAI's code builds float32 variables)")
    out = Path(cfg.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; choose a new folder or remove it")
    folder, path = resolve_source(cfg.source, cfg.models_dir)
    hp = hf.read_hparams(folder)
    vocab = vocab_texts(folder)
    if before_tensorflow is not None:
        before_tensorflow()
    from .checkpoint import load_weights, write_openai_checkpoint

    prefix, weights = load_weights(path, hp)
    logger.info("exporting %s (%d layers, n_embd %d) as %s", prefix, hp.n_layer, hp.n_embd, cfg.format)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as e:
            raise UserError(f"cannot create {out}: {e.strerror or e}") from None
        if cfg.format == "hf":
            files = hf.write_folder(tmp, hp, weights, vocab, cfg.dtype)
        else:
            write_openai_checkpoint(tmp, weights)
            hp.to_json(tmp / "hparams.json")
            atomic_write_text(tmp / "encoder.json", vocab[0])
            atomic_write_text(tmp / "vocab.bpe", vocab[1])
            files = sorted(p.name for p in tmp.iterdir())
        try:
            if out.exists():
                out.rmdir()  # empty (checked above)
            tmp.rename(out)
        except OSError as e:
            raise UserError(f"cannot create {out}: {e.strerror or e}") from None
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": str(out), "format": cfg.format, "checkpoint": prefix, "files": files}
