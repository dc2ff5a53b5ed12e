#!/usr/bin/env python3
"""Export a model for other tools: a Hugging Face folder or OpenAI's release layout (weights only).

    python export.py checkpoint/run1 exported/run1-hf                  # transformers / the hub
    python export.py checkpoint/run1/model-1000 exported/run1-openai --format openai
    python export.py 124M exported/gpt2-bf16 --dtype bfloat16

SOURCE is a run folder (its newest checkpoint), a model folder (ours or a Hugging Face one), a
model-N checkpoint prefix, or a model name under --models_dir. OUT must not exist (or be empty).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


@fire.decorators.SetParseFn(str, "source", "out", "format", "dtype", "models_dir")
def export(source: str, out: str, format: str = "hf", dtype: str = "float32",
           models_dir: str = DEFAULT_MODELS_DIR, verbose: bool = False) -> None:
    """Write SOURCE's weights, hparams and vocabulary into the new folder OUT.

    Args:
        source: run folder, model folder (ours or Hugging Face), checkpoint prefix, or model name.
        out: folder to create.
        format: hf (config.json, model.safetensors, tokenizer files) or openai (model.ckpt, ...).
        dtype: float32, bfloat16 or float16 (hf only).
        models_dir: folder holding one folder per model (for a model name as SOURCE).
        verbose: more logging.
    """
    del verbose  # read by cli.run
    cli.quiet_tensorflow()
    from gpt2easy.export import ExportConfig, run_export

    result = run_export(ExportConfig(source=source, out=out, format=format, dtype=dtype,
                                     models_dir=models_dir))
    print(f"exported {result['checkpoint']} to {result['out']} ({result['format']}: "
          f"{', '.join(result['files'])})", file=sys.stderr)


if __name__ == "__main__":
    cli.run(export)
