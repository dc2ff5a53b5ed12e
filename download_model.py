#!/usr/bin/env python3
"""Download one of OpenAI's GPT-2 checkpoints into src/models/NAME.

    python download_model.py 124M          # also 355M, 774M, 1558M (117M/345M: old names)

Re-running skips complete files and resumes partial ones.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli, download  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


@fire.decorators.SetParseFn(str, "model_name", "models_dir", "base_url")
def download_model(
    model_name: str,
    models_dir: str = DEFAULT_MODELS_DIR,
    base_url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    verbose: bool = False,
) -> None:
    """Fetch the seven files of a GPT-2 model (checkpoint, vocabulary, hparams.json).

    Args:
        model_name: 124M, 355M, 774M or 1558M; 117M and 345M are the old names of 124M and 355M.
        models_dir: folder that holds one folder per model; the files go into models_dir/NAME.
        base_url: server folder holding NAME/FILE, for a mirror; by default OpenAI's public
            storage. With a custom base_url any model name is accepted.
        timeout: seconds to wait for a connection or for data before a request counts as failed.
        retries: how many times to retry a file after a transient failure (timeout, dropped
            connection, HTTP 5xx) before giving up.
        verbose: log every skipped file.
    """
    del verbose  # read by cli.run to set the log level
    result = download.download_model(
        model_name, models_dir=models_dir, base_url=base_url, timeout=timeout, retries=retries
    )
    print(result.summary(), file=sys.stderr)


if __name__ == "__main__":
    cli.run(download_model)
