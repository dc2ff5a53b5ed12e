#!/usr/bin/env python3
"""Download a GPT-2 model into src/models/NAME: OpenAI's storage, or the Hugging Face hub.

    python download_model.py 124M          # also 355M, 774M, 1558M (117M/345M: old names)
    python download_model.py 124M --source hf              # openai-community/gpt2 from the hub
    python download_model.py --repo distilbert/distilgpt2  # any GPT-2 repository -> src/models/distilgpt2

Re-running skips complete files and resumes partial ones. The hub honours HF_ENDPOINT and HF_TOKEN.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

import fire  # noqa: E402

from gpt2easy import cli, hub  # noqa: E402
from gpt2easy.folders import DEFAULT_MODELS_DIR  # noqa: E402


@fire.decorators.SetParseFn(str, "model_name", "models_dir", "base_url", "source", "repo")
def download_model(
    model_name: str | None = None,
    models_dir: str = DEFAULT_MODELS_DIR,
    base_url: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    source: str = "auto",
    repo: str | None = None,
    verbose: bool = False,
) -> None:
    """Fetch a GPT-2 model: OpenAI's seven files, or a Hugging Face folder from the hub.

    Args:
        model_name: 124M, 355M, 774M or 1558M; 117M and 345M are the old names of 124M and 355M.
            With --repo: the folder name (default: the repository's name).
        models_dir: folder that holds one folder per model; the files go into models_dir/NAME.
        base_url: server folder holding NAME/FILE, for a mirror of OpenAI's storage; by default
            OpenAI's public storage. With a custom base_url any model name is accepted.
        timeout: seconds to wait for a connection or for data before a request counts as failed.
        retries: how many times to retry a file after a transient failure (timeout, dropped
            connection, HTTP 5xx) before giving up.
        source: openai (OpenAI's storage), hf (the hub: 124M/355M/774M/1558M are
            openai-community/gpt2, gpt2-medium, gpt2-large, gpt2-xl), or auto (OpenAI's storage,
            then the hub).
        repo: ORG/NAME of any GPT-2-architecture repository of the hub (e.g. distilbert/distilgpt2).
        verbose: log every skipped file.
    """
    del verbose  # read by cli.run to set the log level
    result = hub.fetch_model(model_name, models_dir, source=source, repo=repo, base_url=base_url,
                             timeout=timeout, retries=retries)
    print(result.summary(), file=sys.stderr)


if __name__ == "__main__":
    cli.run(download_model)
