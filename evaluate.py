#!/usr/bin/env python3
"""Score a model on text: mean loss (nats/token), perplexity, bits per byte, token count.

    python evaluate.py valid.txt --model_name 124M
    python evaluate.py data/val.npz --run_name run1 --stride 512 --json
    python evaluate.py 'texts/*.txt' --run_name run1 --checkpoint best

The summary goes to stderr; with --json, one JSON object on stdout as well.
"""

import json as jsonlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


@fire.decorators.SetParseFn(str, "data", "model_name", "models_dir", "run_name", "checkpoint",
                            "precision", "encoding", "checkpoint_dir")
def evaluate(
    data: str,
    model_name: str = "124M",
    models_dir: str = DEFAULT_MODELS_DIR,
    run_name: str | None = None,
    checkpoint: str | None = None,
    stride: int = 0,
    batch_size: int = 4,
    precision: str = "fp32",
    json: bool = False,
    combine: int = 50000,
    encoding: str = "utf-8",
    checkpoint_dir: str = "checkpoint",
    verbose: bool = False,
) -> None:
    """Score DATA (a text file, folder, quoted glob or .npz) with a model; every token is predicted
    exactly once (sliding windows of n_ctx tokens moved by --stride).

    Args:
        data: text file, folder (recursive), quoted glob or .npz token archive.
        model_name: model folder under models_dir (124M, 355M, 774M, 1558M or your own).
        models_dir: folder holding one folder per model.
        run_name: use the newest checkpoint of the training run checkpoint/RUN_NAME.
        checkpoint: a checkpoint folder or model-N prefix; `best` (with --run_name): the run's
            checkpoint with the lowest validation loss (train.py --keep_best).
        stride: window step; each prediction after the first window sees at least
            n_ctx + 1 - stride tokens. 0 = n_ctx (no overlap, fastest).
        batch_size: windows per forward pass.
        precision: fp32 or bf16 matmuls.
        json: also print the result as one JSON line on stdout.
        combine: text files are joined into chunks of at least this many characters.
        encoding: text encoding of the text files.
        checkpoint_dir: where run folders are (for --run_name).
        verbose: more logging.
    """
    del verbose  # read by cli.run
    cli.quiet_tensorflow()
    from gpt2easy.evaluate import EvaluateConfig, run_evaluate

    cfg = EvaluateConfig(data=data, model_name=model_name, models_dir=models_dir, run_name=run_name,
                         checkpoint=checkpoint, stride=int(stride), batch_size=int(batch_size),
                         precision=precision, json=bool(json), combine=int(combine),
                         encoding=encoding, checkpoint_dir=checkpoint_dir)
    result = run_evaluate(cfg)
    print(f"{cfg.data}: {result.summary()} ({result.checkpoint})", file=sys.stderr)
    if cfg.json:
        print(jsonlib.dumps(result.to_dict()), flush=True)


if __name__ == "__main__":
    cli.run(evaluate)
