"""gpt2easy: fine-tune GPT-2 on your own text and generate from it, on TensorFlow 2.

From Python (see the README's "From Python"):

    import gpt2easy
    gpt2easy.download_model("124M")
    gpt2easy.encode("corpus.txt", "corpus.npz")
    result = gpt2easy.finetune("corpus.npz", model_name="124M", run_name="run1", steps=1000)
    model = gpt2easy.load(run_name="run1")
    texts = model.generate(["To be, or not", "Once upon a time"], length=100, top_k=40, seed=1)

Importing gpt2easy does not import TensorFlow: the API's functions are loaded on first use.
Modules that never import TensorFlow (so `encode.py` starts fast): `errors`, `hparams`, `files`,
`folders`, `encoder`, `dataset`, `cli`, `api`. The TensorFlow side: `model`, `checkpoint`, `sample`,
`step`, `trainer`, `loaded_model`.
"""

from .errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "download_model", "encode", "finetune", "load", "export", "FinetuneResult", "Model"]

_API = {"download_model", "encode", "finetune", "load", "export", "FinetuneResult", "Model"}


def __getattr__(name: str):
    """The API's functions, imported on first use (so that `import gpt2easy` stays light)."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
